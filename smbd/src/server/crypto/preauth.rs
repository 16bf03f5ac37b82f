//! SMB 3.1.1 preauthentication integrity hash (MS-SMB2 3.3.5.4, 3.3.5.5):
//! H(0) = 64 zero bytes, H(n) = SHA-512(H(n-1) || message).

use sha2::{Digest, Sha512};

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PreauthHash([u8; 64]);

impl Default for PreauthHash {
    fn default() -> Self {
        Self::new()
    }
}

impl PreauthHash {
    pub fn new() -> Self {
        PreauthHash([0u8; 64])
    }

    /// Folds one complete SMB2 message (header + body) into the hash.
    pub fn update(&mut self, message: &[u8]) {
        let mut h = Sha512::new();
        h.update(self.0);
        h.update(message);
        self.0.copy_from_slice(&h.finalize());
    }

    /// A hash carried over from another process (a moved connection).
    pub fn from_value(v: [u8; 64]) -> Self {
        PreauthHash(v)
    }

    pub fn value(&self) -> &[u8; 64] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The message sequence and hash values from the Microsoft Open
    /// Specifications blog "SMB 3.1.1 Pre-authentication integrity in
    /// Windows 10" (also in "the anatomy of signing and cryptographic keys").
    #[test]
    fn blog_example_sequence() {
        let steps = [
            (
                "FE534D4240000100000000000000800000000000000000000100000000000000FFFE000000000000\
                 00000000000000000000000000000000000000000000000024000500000000003F000000ECD86F32\
                 6276024F9F7752B89BB33F3A70000000020000000202100200030203110300000100260000000000\
                 010020000100FA49E6578F1F3A9F4CD3E9CC14A67AA884B3D05844E0E5A118225C15887F32FF0000\
                 0200060000000000020002000100",
                "DD94EFC5321BB618A2E208BA8920D2F422992526947A409B5037DE1E0FE8C7362B8C47122594CDE0\
                 CE26AA9DFC8BCDBDE0621957672623351A7540F1E54A0426",
            ),
            (
                "FE534D4240000100000000000000010001000000000000000100000000000000FFFE000000000000\
                 000000000000000000000000000000000000000000000000410001001103020039CBCAF329714942\
                 BDCE5D60F09AB3FB2F000000000080000000800000008000D8DAE5ADCBAED00109094AB095AED001\
                 80004001C00100006082013C06062B0601050502A08201303082012CA01A3018060A2B0601040182\
                 3702021E060A2B06010401823702020AA282010C048201084E45474F455854530100000000000000\
                 60000000700000007C7CC0FD06D6362D02DDE1CF343BFE292900F49750B4AA97934D9C4296B26E51\
                 FD370471B235E15A50DAE15BD5489C87000000000000000060000000010000000000000000000000\
                 5C33530DEAF90D4DB2EC4AE3786EC3084E45474F4558545303000000010000004000000098000000\
                 7C7CC0FD06D6362D02DDE1CF343BFE295C33530DEAF90D4DB2EC4AE3786EC3084000000058000000\
                 3056A05430523027802530233121301F06035504031318546F6B656E205369676E696E6720507562\
                 6C6963204B65793027802530233121301F06035504031318546F6B656E205369676E696E67205075\
                 626C6963204B6579010026000000000001002000010060A3C3B95C3C7CCD51EC536648D9B3AC74C4\
                 83CA5B65385A251117BEB30712E50000020004000000000001000200",
                "324BFA92A4F3A190E466EBEA08D9C110DC88BFED758D9846ECC6F541CC1D02AE3C94A79F36011E99\
                 7E13F841B91B50957AD07B19C8E2539C0B23FDAE09D2C513",
            ),
        ];
        let mut p = PreauthHash::new();
        assert_eq!(p.value(), &[0u8; 64]);
        for (msg, want) in steps {
            p.update(&h(msg));
            assert_eq!(p.value().to_vec(), h(want));
        }
    }
}
