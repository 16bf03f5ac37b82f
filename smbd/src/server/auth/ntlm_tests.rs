//! Tests for the NTLM acceptor. Test code here plays the client.

use super::*;
use crate::wire::spnego::NegTokenInit;
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn target() -> TargetInfo {
    TargetInfo {
        netbios_domain: "WORKGROUP".into(),
        netbios_computer: "HOLDFAST".into(),
        dns_domain: "example.test".into(),
        dns_computer: "holdfast.example.test".into(),
    }
}

// ------------------------------------------------ MS-NLMP 4.2.4 vectors

#[test]
fn nlmp_424_ntlmv2_vectors() {
    let nt = nt_hash("Password");
    assert_eq!(hex::encode(nt), "a4f49c406510bdcab6824ee7c30fd852");
    let key = ntowfv2(&nt, "User", "Domain");
    assert_eq!(hex::encode(key), "0c868a403bfd7a93a3001ef22ef02e3f"); // 4.2.4.1.1
    let temp = h("01010000000000000000000000000000aaaaaaaaaaaaaaaa00000000\
        02000c0044006f006d00610069006e0001000c005300650072007600650072000000000000000000");
    let proof = hmac_md5(&key, &[&h("0123456789abcdef"), &temp]);
    assert_eq!(hex::encode(proof), "68cd0ab851e51c96aabc927bebef6a1c"); // 4.2.4.2.2
    let base = hmac_md5(&key, &[&proof]);
    assert_eq!(hex::encode(base), "8de40ccadbc14a82f15cb0ad0de95ca3"); // 4.2.4.1.2
    let mut enc = [0x55u8; 16];
    rc4_new(&base).apply_keystream(&mut enc);
    assert_eq!(hex::encode(enc), "c5dad2544fc9799094ce1ce90bc9d03e"); // 4.2.4.2.3
                                                                      // Keys from the exported session key 0x55 * 16 (4.2.4.2.3/4.2.4.4).
    let flags = 0xe288_8235u32;
    let exported = [0x55u8; 16];
    assert_eq!(
        hex::encode(sign_key(&exported, false)),
        "4788dc861b4782f35d43fd98fe1a2d39"
    );
    assert_eq!(
        hex::encode(seal_key(flags, &exported, false)),
        "59f600973cc4960a25480a7c196e4c58"
    );
    // 4.2.4.4 GSS_WrapEx: seal "Plaintext", then MAC with the same RC4 stream.
    let mut rc4 = rc4_new(&seal_key(flags, &exported, false));
    let mut data = utf16le("Plaintext");
    rc4.apply_keystream(&mut data);
    assert_eq!(hex::encode(&data), "54e50165bf1936dc996020c1811b0f06fb5f");
    let sig = ntlm_mac(
        flags,
        &sign_key(&exported, false),
        &mut rc4,
        0,
        &utf16le("Plaintext"),
    );
    assert_eq!(hex::encode(sig), "010000007fb38ec5c55d497600000000");
}

/// The MS-NLMP 4.2.4.3 AUTHENTICATE_MESSAGE fed to the acceptor (raw
/// NTLMSSP): accepted, with the exported session key 0x55 * 16.
#[test]
fn nlmp_424_authenticate_accepted() {
    let mut srv =
        NtlmServer::with_challenge(target(), [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    let neg = NegotiateMessage {
        flags: 0xe288_8235,
        ..Default::default()
    }
    .encode();
    let AuthStep::Continue(chal) = srv.step(&neg, &|_, _| None) else {
        panic!()
    };
    assert_eq!(n::message_type(&chal), Some(n::MSG_CHALLENGE));
    let auth = h(crate::wire::ntlmssp::tests_support::NLMP_AUTH);
    let lookup = |u: &str, d: &str| {
        (u.eq_ignore_ascii_case("user") && d == "Domain").then(|| nt_hash("Password"))
    };
    match srv.step(&auth, &lookup) {
        AuthStep::Done(o) => {
            assert_eq!(o.session_key, [0x55; 16]);
            assert_eq!(
                (o.user.as_str(), o.domain.as_str(), o.workstation.as_str()),
                ("User", "Domain", "COMPUTER")
            );
            assert!(!o.anonymous);
            assert!(o.token.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Finished: any further token is refused.
    assert!(matches!(srv.step(&auth, &lookup), AuthStep::Failed { .. }));
}

// ---------------------------------------- Windows 8.1 client trace (blog)

// From the Microsoft Open Specifications blog "SMB 2 and SMB 3 security in
// Windows 10: the anatomy of signing and cryptographic keys" (3.1.1 example,
// user administrator / domain SUT311 / password Password01!).
const WIN_SS_REQ1: &str =
    "FE534D4240000100000000000100800000000000000000000200000000000000FFFE000000000000\
    00000000000000000000000000000000000000000000000019000001010000000000000058004A00\
    0000000000000000604806062B0601050502A03E303CA00E300C060A2B06010401823702020AA22A\
    04284E544C4D5353500001000000978208E200000000000000000000000000000000060380250000\
    000F";
const WIN_SS_RESP1: &str =
    "FE534D4240000100160000C00100010001000000000000000200000000000000FFFE000000000000\
    190000000010000000000000000000000000000000000000090000004800B300A181B03081ADA003\
    0A0101A10C060A2B06010401823702020AA281970481944E544C4D53535000020000000C000C0038\
    00000015828AE20D1D8BA31179D008000000000000000050005000440000000A0092270000000F53\
    005500540033003100310002000C0053005500540033003100310001000C00530055005400330031\
    00310004000C0053005500540033003100310003000C0053005500540033003100310007000800A1\
    A1F5ADCBAED00100000000";
const WIN_SS_REQ2: &str =
    "FE534D4240000100000000000100800000000000000000000300000000000000FFFE000000000000\
    1900000000100000000000000000000000000000000000001900000101000000000000005800CF01\
    0000000000000000A18201CB308201C7A0030A0101A28201AA048201A64E544C4D53535000030000\
    001800180090000000EE00EE00A80000000C000C00580000001A001A0064000000120012007E0000\
    001000100096010000158288E2060380250000000FECAC77A5F385A8BF9C38C706EEEDDCD3530055\
    005400330031003100610064006D0069006E006900730074007200610074006F0072004400520049\
    0056004500520033003100310000000000000000000000000000000000000000000000000063078E\
    B639FE03E20A231C3AE3BF23080101000000000000A1A1F5ADCBAED001BC4AD05F223CC90F000000\
    0002000C0053005500540033003100310001000C0053005500540033003100310004000C00530055\
    00540033003100310003000C0053005500540033003100310007000800A1A1F5ADCBAED001060004\
    00020000000800300030000000000000000000000000300000B61FEFCAA857EA57BF1EDCEBF8974B\
    8E0EBA5A6DFD9D07A31D11B548F8C9D0CC0A00100000000000000000000000000000000000090016\
    0063006900660073002F005300550054003300310031000000000000000000000000003B9BDFF38F\
    5EE8F9663F11A0F4C03A78A31204100100000063775A9A5FD97F0600000000";
const WIN_FINAL_TOKEN: &str = "A11B3019A0030A0100A3120410010000003B453CDC3524164200000000";

/// The security buffer of a SESSION_SETUP request (offset at 64+12) or
/// response (offset at 64+4).
fn sec_buf(msg: &[u8], request: bool) -> Vec<u8> {
    let at = if request { 64 + 12 } else { 64 + 4 };
    let off = u16::from_le_bytes([msg[at], msg[at + 1]]) as usize;
    let len = u16::from_le_bytes([msg[at + 2], msg[at + 3]]) as usize;
    msg[off..off + len].to_vec()
}

#[test]
fn windows_trace_end_to_end() {
    let mut srv = NtlmServer::with_challenge(target(), h("0D1D8BA31179D008").try_into().unwrap());
    let lookup = |u: &str, d: &str| {
        (u.eq_ignore_ascii_case("administrator") && d.eq_ignore_ascii_case("SUT311"))
            .then(|| nt_hash("Password01!"))
    };
    let AuthStep::Continue(resp1) = srv.step(&sec_buf(&h(WIN_SS_REQ1), true), &lookup) else {
        panic!()
    };
    let SpnegoToken::Resp(r) = spnego::decode(&resp1).unwrap() else {
        panic!()
    };
    assert_eq!(r.neg_state, Some(NegState::AcceptIncomplete));
    assert_eq!(r.supported_mech.as_deref(), Some(OID_NTLMSSP));
    // The client's MIC covers the CHALLENGE Windows sent, so replay that.
    let SpnegoToken::Resp(win) = spnego::decode(&sec_buf(&h(WIN_SS_RESP1), false)).unwrap() else {
        panic!()
    };
    srv.challenge_msg = win.response_token.unwrap();
    match srv.step(&sec_buf(&h(WIN_SS_REQ2), true), &lookup) {
        AuthStep::Done(o) => {
            assert_eq!(
                hex::encode_upper(o.session_key),
                "270E1BA896585EEB7AF3472D3B4C75A7"
            );
            assert_eq!(o.user, "administrator");
            assert_eq!(o.domain, "SUT311");
            assert_eq!(o.workstation, "DRIVER311");
            // Byte-identical to the Windows server's final token, including
            // its mechListMIC.
            assert_eq!(o.token, h(WIN_FINAL_TOKEN));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn windows_trace_wrong_password_and_tampered_mic() {
    for case in 0..3 {
        let mut srv =
            NtlmServer::with_challenge(target(), h("0D1D8BA31179D008").try_into().unwrap());
        let pw = if case == 0 {
            "password01!"
        } else {
            "Password01!"
        };
        let lookup = move |_: &str, _: &str| Some(nt_hash(pw));
        let AuthStep::Continue(_) = srv.step(&sec_buf(&h(WIN_SS_REQ1), true), &lookup) else {
            panic!()
        };
        let SpnegoToken::Resp(win) = spnego::decode(&sec_buf(&h(WIN_SS_RESP1), false)).unwrap()
        else {
            panic!()
        };
        srv.challenge_msg = win.response_token.unwrap();
        let mut tok = sec_buf(&h(WIN_SS_REQ2), true);
        let len = tok.len();
        assert_eq!(len, 463);
        assert_eq!(&tok[21..29], n::SIGNATURE);
        match case {
            1 => tok[len - 6] ^= 1,             // mechListMIC
            2 => tok[len - 463 + 21 + 72] ^= 1, // NTLM MIC (NTLMSSP starts 21 bytes into the token)
            _ => {}
        }
        match srv.step(&tok, &lookup) {
            AuthStep::Failed { status, user, .. } => {
                assert_eq!(status, NtStatus::LOGON_FAILURE, "case {case}");
                assert_eq!(user.as_deref(), Some("administrator"));
            }
            other => panic!("case {case}: {other:?}"),
        }
    }
}

// ------------------------------------------------ in-process test client

struct Client {
    user: &'static str,
    domain_sent: &'static str,
    domain_hashed: &'static str,
    password: &'static str,
    flags: u32,
    with_mic: bool,
    spnego: bool,
    random_key: [u8; 16],
}

impl Default for Client {
    fn default() -> Self {
        Client {
            user: "alice",
            domain_sent: "WORKGROUP",
            domain_hashed: "WORKGROUP",
            password: "s3cret!",
            flags: 0xe208_8297, // a typical Windows NEGOTIATE flag set
            with_mic: true,
            spnego: true,
            random_key: [0x3c; 16],
        }
    }
}

const MECH_TYPES_DER: &str = "300C060A2B06010401823702020A";

impl Client {
    fn negotiate(&self) -> (Vec<u8>, Vec<u8>) {
        let neg = NegotiateMessage {
            flags: self.flags,
            ..Default::default()
        }
        .encode();
        let tok = if self.spnego {
            NegTokenInit {
                mech_types: vec![OID_NTLMSSP.to_vec()],
                mech_token: Some(neg.clone()),
                ..Default::default()
            }
            .encode()
        } else {
            neg.clone()
        };
        (neg, tok)
    }

    /// Returns the AUTHENTICATE token and the exported session key.
    fn authenticate(&self, neg: &[u8], server_tok: &[u8]) -> (Vec<u8>, [u8; 16]) {
        let chal_bytes = if self.spnego {
            let SpnegoToken::Resp(r) = spnego::decode(server_tok).unwrap() else {
                panic!()
            };
            r.response_token.unwrap()
        } else {
            server_tok.to_vec()
        };
        let chal = ChallengeMessage::decode(&chal_bytes).unwrap();
        let flags = chal.flags;
        let mut av = decode_av_pairs(&chal.target_info).unwrap();
        assert!(av.iter().any(|p| p.id == n::AV_TIMESTAMP));
        if self.with_mic {
            av.push(AvPair {
                id: n::AV_FLAGS,
                value: n::AV_FLAG_MIC_PRESENT.to_le_bytes().to_vec(),
            });
        }
        let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
        blob.extend_from_slice(&[0x11; 8]); // time
        blob.extend_from_slice(&[0xcc; 8]); // client challenge
        blob.extend_from_slice(&[0; 4]);
        blob.extend(encode_av_pairs(&av));
        blob.extend_from_slice(&[0; 4]);
        let key = ntowfv2(&nt_hash(self.password), self.user, self.domain_hashed);
        let proof = hmac_md5(&key, &[&chal.server_challenge, &blob]);
        let base = hmac_md5(&key, &[&proof]);
        let mut enc = self.random_key;
        rc4_new(&base).apply_keystream(&mut enc);
        let exported = if flags & n::NEGOTIATE_KEY_EXCH != 0 {
            self.random_key
        } else {
            base
        };
        let mut nt = proof.to_vec();
        nt.extend(blob);
        let mut auth = AuthenticateMessage {
            flags,
            lm_response: vec![0; 24],
            nt_response: nt,
            domain: self.domain_sent.into(),
            user: self.user.into(),
            workstation: "CLIENT1".into(),
            encrypted_random_session_key: if flags & n::NEGOTIATE_KEY_EXCH != 0 {
                enc.to_vec()
            } else {
                vec![]
            },
            mic: None,
        }
        .encode();
        if self.with_mic {
            let mic = hmac_md5(&exported, &[neg, &chal_bytes, &auth]);
            auth[72..88].copy_from_slice(&mic);
        }
        let tok = if self.spnego {
            NegTokenResp {
                neg_state: None,
                supported_mech: None,
                response_token: Some(auth),
                mech_list_mic: Some(
                    mech_list_mic(flags, &exported, false, &h(MECH_TYPES_DER)).to_vec(),
                ),
            }
            .encode()
        } else {
            auth
        };
        (tok, exported)
    }

    fn run(&self, lookup: &dyn Fn(&str, &str) -> Option<[u8; 16]>) -> (AuthStep, [u8; 16]) {
        let mut srv = NtlmServer::new(target());
        let (neg, tok) = self.negotiate();
        let AuthStep::Continue(chal) = srv.step(&tok, lookup) else {
            panic!("no challenge")
        };
        let (auth, exported) = self.authenticate(&neg, &chal);
        (srv.step(&auth, lookup), exported)
    }
}

fn alice_lookup(u: &str, _d: &str) -> Option<[u8; 16]> {
    u.eq_ignore_ascii_case("alice").then(|| nt_hash("s3cret!"))
}

#[test]
fn handshake_success_spnego() {
    let (step, exported) = Client::default().run(&alice_lookup);
    let AuthStep::Done(o) = step else {
        panic!("{step:?}")
    };
    assert_eq!(o.session_key, exported);
    assert_eq!(o.user, "alice");
    assert_eq!(o.workstation, "CLIENT1");
    let SpnegoToken::Resp(r) = spnego::decode(&o.token).unwrap() else {
        panic!()
    };
    assert_eq!(r.neg_state, Some(NegState::AcceptCompleted));
    // The client can verify the server's mechListMIC with the server keys.
    let want = mech_list_mic(
        0xe208_8297 | n::NEGOTIATE_KEY_EXCH,
        &exported,
        true,
        &h(MECH_TYPES_DER),
    );
    assert_eq!(r.mech_list_mic.as_deref(), Some(&want[..]));
}

#[test]
fn handshake_success_raw_and_variants() {
    for c in [
        Client {
            spnego: false,
            ..Default::default()
        },
        Client {
            with_mic: false,
            ..Default::default()
        },
        Client {
            flags: 0x6208_8215 & !n::NEGOTIATE_KEY_EXCH,
            ..Default::default()
        },
        // Client hashed with an empty domain but sent one.
        Client {
            domain_hashed: "",
            ..Default::default()
        },
        Client {
            user: "ALICE",
            ..Default::default()
        },
    ] {
        let (step, exported) = c.run(&alice_lookup);
        match step {
            AuthStep::Done(o) => {
                assert_eq!(o.session_key, exported);
                assert_eq!(o.token.is_empty(), !c.spnego);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn handshake_wrong_password_and_unknown_user() {
    let (step, _) = Client {
        password: "wrong",
        ..Default::default()
    }
    .run(&alice_lookup);
    assert_eq!(
        step,
        AuthStep::Failed {
            status: NtStatus::LOGON_FAILURE,
            user: Some("alice".into()),
            domain: Some("WORKGROUP".into())
        }
    );
    let (step, _) = Client {
        user: "mallory",
        ..Default::default()
    }
    .run(&alice_lookup);
    assert!(matches!(step,
        AuthStep::Failed { status: NtStatus::LOGON_FAILURE, user: Some(u), .. } if u == "mallory"));
    // Wrong hashed domain (neither the sent one nor empty).
    let (step, _) = Client {
        domain_hashed: "OTHER",
        ..Default::default()
    }
    .run(&alice_lookup);
    assert!(matches!(
        step,
        AuthStep::Failed {
            status: NtStatus::LOGON_FAILURE,
            ..
        }
    ));
}

fn raw_auth_after_challenge(auth: AuthenticateMessage) -> AuthStep {
    let mut srv = NtlmServer::new(target());
    let neg = NegotiateMessage {
        flags: 0xe208_8297,
        ..Default::default()
    }
    .encode();
    let AuthStep::Continue(_) = srv.step(&neg, &alice_lookup) else {
        panic!()
    };
    srv.step(&auth.encode(), &alice_lookup)
}

#[test]
fn ntlmv1_refused() {
    let step = raw_auth_after_challenge(AuthenticateMessage {
        flags: n::NEGOTIATE_UNICODE | n::NEGOTIATE_NTLM,
        lm_response: vec![7; 24],
        nt_response: vec![9; 24],
        user: "alice".into(),
        domain: "WORKGROUP".into(),
        ..Default::default()
    });
    assert!(matches!(
        step,
        AuthStep::Failed {
            status: NtStatus::LOGON_FAILURE,
            user: Some(_),
            ..
        }
    ));
}

/// An NTLMv2 response whose client challenge has a malformed AV pair list
/// (the "net diag" blob of smbtorture ntlmssp_bug14932) is a bad parameter,
/// decided before any password check.
#[test]
fn ntlmv2_malformed_av_pairs_invalid_parameter() {
    let mut nt = vec![0xab; 16];
    nt.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    nt.extend_from_slice(&[0x3f; 8]);
    nt.extend_from_slice(&[0xb8, 0x82, 0x3a, 0xf1, 0xb3, 0xdd, 0x08, 0x15]);
    nt.extend_from_slice(&[0, 0, 0, 0]);
    // An AV pair claiming 0x8108 bytes with a few present, and no MsvAvEOL.
    nt.extend_from_slice(&[0x11, 0xa2, 0x08, 0x81, 0x50, 0x38, 0x22, 0x78]);
    for user in ["alice", "nosuchuser"] {
        let step = raw_auth_after_challenge(AuthenticateMessage {
            flags: n::NEGOTIATE_UNICODE | n::NEGOTIATE_NTLM,
            lm_response: vec![0; 24],
            nt_response: nt.clone(),
            user: user.into(),
            domain: "WORKGROUP".into(),
            ..Default::default()
        });
        assert!(
            matches!(
                step,
                AuthStep::Failed {
                    status: NtStatus::INVALID_PARAMETER,
                    ..
                }
            ),
            "{user}: {step:?}"
        );
    }
}

#[test]
fn anonymous_accepted() {
    for lm in [vec![], vec![0u8]] {
        let step = raw_auth_after_challenge(AuthenticateMessage {
            flags: n::NEGOTIATE_UNICODE | n::NEGOTIATE_ANONYMOUS,
            lm_response: lm,
            ..Default::default()
        });
        let AuthStep::Done(o) = step else {
            panic!("{step:?}")
        };
        assert!(o.anonymous);
        assert_eq!(o.session_key, [0; 16]);
        assert_eq!(o.user, "");
    }
}

#[test]
fn out_of_order_and_garbage() {
    // AUTHENTICATE first.
    let mut srv = NtlmServer::new(target());
    let auth = AuthenticateMessage {
        flags: 1,
        ..Default::default()
    }
    .encode();
    assert!(matches!(
        srv.step(&auth, &alice_lookup),
        AuthStep::Failed {
            status: NtStatus::INVALID_PARAMETER,
            ..
        }
    ));
    // Garbage.
    let mut srv = NtlmServer::new(target());
    assert!(matches!(
        srv.step(b"hello", &alice_lookup),
        AuthStep::Failed {
            status: NtStatus::INVALID_PARAMETER,
            ..
        }
    ));
    // SPNEGO without NTLMSSP.
    let mut srv = NtlmServer::new(target());
    let krb_only = NegTokenInit {
        mech_types: vec![vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02]],
        ..Default::default()
    };
    assert!(matches!(
        srv.step(&krb_only.encode(), &alice_lookup),
        AuthStep::Failed {
            status: NtStatus::NOT_SUPPORTED,
            ..
        }
    ));
}

#[test]
fn kerberos_first_then_ntlm_requires_mic() {
    let krb = vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
    let init = NegTokenInit {
        mech_types: vec![krb.clone(), OID_NTLMSSP.to_vec()],
        mech_token: Some(vec![0x60, 0x00]),
        ..Default::default()
    };
    let mut srv = NtlmServer::new(target());
    let AuthStep::Continue(t) = srv.step(&init.encode(), &alice_lookup) else {
        panic!()
    };
    let SpnegoToken::Resp(r) = spnego::decode(&t).unwrap() else {
        panic!()
    };
    assert_eq!(r.neg_state, Some(NegState::RequestMic));
    assert_eq!(r.supported_mech.as_deref(), Some(OID_NTLMSSP));
    assert!(r.response_token.is_none());
    // The client now sends its NEGOTIATE in a negTokenResp.
    let c = Client::default();
    let (neg, _) = c.negotiate();
    let tok = NegTokenResp {
        response_token: Some(neg.clone()),
        ..Default::default()
    }
    .encode();
    let AuthStep::Continue(chal) = srv.step(&tok, &alice_lookup) else {
        panic!()
    };
    let (auth, exported) = c.authenticate(&neg, &chal);
    // The client's mechListMIC was computed over a different MechTypeList in
    // Client::authenticate; recompute it for this one.
    let SpnegoToken::Resp(mut ar) = spnego::decode(&auth).unwrap() else {
        panic!()
    };
    let der = crate::wire::spnego::encode_mech_types(&[krb, OID_NTLMSSP.to_vec()]);
    ar.mech_list_mic = Some(mech_list_mic(0xe208_8297, &exported, false, &der).to_vec());
    let AuthStep::Done(o) = srv.step(&ar.encode(), &alice_lookup) else {
        panic!()
    };
    assert_eq!(o.session_key, exported);
}

proptest! {
    #[test]
    fn step_never_panics_first(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut srv = NtlmServer::new(target());
        let _ = srv.step(&data, &alice_lookup);
        let _ = srv.step(&data, &alice_lookup);
    }

    #[test]
    fn step_never_panics_second(data in proptest::collection::vec(any::<u8>(), 0..400), raw in any::<bool>()) {
        let mut srv = NtlmServer::new(target());
        let c = Client { spnego: !raw, ..Default::default() };
        let (_, tok) = c.negotiate();
        let _ = srv.step(&tok, &alice_lookup);
        let mut d = data;
        if raw && d.len() >= 12 {
            d[..8].copy_from_slice(n::SIGNATURE);
            d[8..12].copy_from_slice(&3u32.to_le_bytes());
        }
        let _ = srv.step(&d, &alice_lookup);
    }

    #[test]
    fn step_never_panics_mutated_auth(idx in 0usize..2000, val in any::<u8>()) {
        let mut srv = NtlmServer::new(target());
        let c = Client::default();
        let (neg, tok) = c.negotiate();
        let AuthStep::Continue(chal) = srv.step(&tok, &alice_lookup) else { panic!() };
        let (mut auth, _) = c.authenticate(&neg, &chal);
        let i = idx % auth.len();
        auth[i] = val;
        let _ = srv.step(&auth, &alice_lookup);
    }
}
