//! Malformed SMB2 requests of every command against a real holdfast-smbd, sent by a
//! minimal raw-packet client (NTLMv2 over raw NTLMSSP, SMB 2.1, HMAC-SHA256 signing).
//! Each case asserts the answer MS-SMB2 asks for (an error response with a given status,
//! no response, or a disconnect); after each case a fresh connection must still
//! negotiate, and at the end smbclient must still list the share.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use holdfast_smbd::server::auth::nt_hash;
use holdfast_smbd::server::crypto::{sign_message, SigningAlgorithm};
use holdfast_smbd::wire::ntlmssp::{self as n, AuthenticateMessage, ChallengeMessage};
use holdfast_smbd::wire::utf16le;
use holdfast_tests::{assert_smb_ok, peers_available, Server};
use md5::Md5;

const INVALID_PARAMETER: u32 = 0xC000_000D;
const MORE_PROCESSING: u32 = 0xC000_0016;
const ACCESS_DENIED: u32 = 0xC000_0022;
const PENDING: u32 = 0x0000_0103;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An SMB2 response with this status.
    Status(u32),
    /// The server closed the connection.
    Closed,
    /// Nothing came back within the wait.
    NoReply,
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).expect("hmac key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn le16(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}

struct Cli {
    s: TcpStream,
    mid: u64,
    sid: u64,
    tid: u32,
    key: Option<[u8; 16]>,
}

impl Cli {
    fn connect(srv: &Server) -> Cli {
        let s = TcpStream::connect((srv.host.as_str(), srv.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Cli {
            s,
            mid: 0,
            sid: 0,
            tid: 0,
            key: None,
        }
    }

    /// One request message (header + body), signed when the session has a key.
    fn message(&mut self, cmd: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + body.len());
        m.extend_from_slice(&[0xFE, b'S', b'M', b'B']);
        m.extend_from_slice(&64u16.to_le_bytes());
        m.extend_from_slice(&1u16.to_le_bytes()); // credit charge
        m.extend_from_slice(&0u32.to_le_bytes()); // status
        m.extend_from_slice(&cmd.to_le_bytes());
        m.extend_from_slice(&64u16.to_le_bytes()); // credits requested
        m.extend_from_slice(&0u32.to_le_bytes()); // flags
        m.extend_from_slice(&0u32.to_le_bytes()); // next command
        m.extend_from_slice(&self.mid.to_le_bytes());
        m.extend_from_slice(&0xFEFFu32.to_le_bytes()); // process id
        m.extend_from_slice(&self.tid.to_le_bytes());
        m.extend_from_slice(&self.sid.to_le_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m.extend_from_slice(body);
        if cmd != 12 {
            self.mid += 1;
        }
        if let Some(k) = self.key {
            sign_message(SigningAlgorithm::HmacSha256, &k, &mut m);
        }
        m
    }

    fn send_frame(&mut self, payload: &[u8]) {
        let l = payload.len();
        let mut f = vec![0, (l >> 16) as u8, (l >> 8) as u8, l as u8];
        f.extend_from_slice(payload);
        // A server that already closed may reset the connection: recv reports that.
        let _ = self.s.write_all(&f);
    }

    fn send(&mut self, cmd: u16, body: &[u8]) {
        let m = self.message(cmd, body);
        self.send_frame(&m);
    }

    /// Next response, skipping interim STATUS_PENDING ones.
    fn recv_within(&mut self, wait: Duration) -> Result<Vec<u8>, Outcome> {
        self.s.set_read_timeout(Some(wait)).unwrap();
        loop {
            let mut h = [0u8; 4];
            match self.s.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Outcome::NoReply)
                }
                Err(_) => return Err(Outcome::Closed),
            }
            let len = (h[1] as usize) << 16 | (h[2] as usize) << 8 | h[3] as usize;
            let mut b = vec![0u8; len];
            if self.s.read_exact(&mut b).is_err() {
                return Err(Outcome::Closed);
            }
            assert!(
                b.len() >= 64 && b[..4] == [0xFE, b'S', b'M', b'B'],
                "not SMB2"
            );
            let status = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            let flags = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
            if status == PENDING && flags & 2 != 0 {
                continue;
            }
            return Ok(b);
        }
    }

    fn recv(&mut self) -> Result<Vec<u8>, Outcome> {
        self.recv_within(Duration::from_secs(5))
    }

    fn outcome(&mut self) -> Outcome {
        match self.recv() {
            Ok(b) => Outcome::Status(u32::from_le_bytes([b[8], b[9], b[10], b[11]])),
            Err(o) => o,
        }
    }

    /// Sends and expects success; returns the response.
    fn call(&mut self, cmd: u16, body: &[u8]) -> Vec<u8> {
        self.send(cmd, body);
        let r = self
            .recv()
            .unwrap_or_else(|o| panic!("command {cmd}: {o:?}"));
        let st = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
        assert!(st == 0 || st == MORE_PROCESSING, "command {cmd}: {st:#x}");
        r
    }

    fn negotiate(&mut self) {
        let r = self.call(0, &negotiate_body());
        assert_eq!(le16(&r, 64 + 4), 0x0210, "dialect");
    }

    /// NEGOTIATE, NTLMv2 SESSION_SETUP as the test user, TREE_CONNECT to the share.
    fn login(srv: &Server) -> Cli {
        let mut c = Cli::connect(srv);
        c.negotiate();
        let flags = n::NEGOTIATE_UNICODE
            | n::NEGOTIATE_NTLM
            | n::NEGOTIATE_EXTENDED_SESSIONSECURITY
            | n::NEGOTIATE_SIGN
            | n::NEGOTIATE_ALWAYS_SIGN
            | n::NEGOTIATE_128
            | n::REQUEST_TARGET;
        let neg = n::NegotiateMessage {
            flags,
            domain: Vec::new(),
            workstation: Vec::new(),
        }
        .encode();
        let r = c.call(1, &session_setup_body(&neg));
        c.sid = u64::from_le_bytes(r[40..48].try_into().unwrap());
        let (off, len) = (le16(&r, 64 + 4), le16(&r, 64 + 6));
        let chal = ChallengeMessage::decode(&r[off..off + len]).expect("challenge");
        let ts = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 11_644_473_600)
            * 10_000_000;
        let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
        blob.extend_from_slice(&ts.to_le_bytes());
        blob.extend_from_slice(&[7u8; 8]);
        blob.extend_from_slice(&[0; 4]);
        blob.extend_from_slice(&chal.target_info);
        blob.extend_from_slice(&[0; 4]);
        let key = hmac_md5(
            &nt_hash(&srv.password),
            &[&utf16le(&srv.user.to_uppercase())],
        );
        let proof = hmac_md5(&key, &[&chal.server_challenge, &blob]);
        let mut nt = proof.to_vec();
        nt.extend_from_slice(&blob);
        let auth = AuthenticateMessage {
            flags,
            lm_response: vec![0; 24],
            nt_response: nt,
            domain: String::new(),
            user: srv.user.clone(),
            workstation: "MALFORMED".into(),
            encrypted_random_session_key: Vec::new(),
            mic: None,
        }
        .encode();
        c.call(1, &session_setup_body(&auth));
        c.key = Some(hmac_md5(&key, &[&proof]));
        let path = utf16le(&format!("\\\\{}\\{}", srv.host, srv.share));
        let r = c.call(3, &tree_connect_body(&path));
        c.tid = u32::from_le_bytes(r[36..40].try_into().unwrap());
        c
    }

    /// CREATE (open-if) of `name`, or of the share root when empty; returns the FileId.
    fn open(&mut self, name: &str, dir: bool) -> [u8; 16] {
        let r = self.call(5, &create_body(&utf16le(name), dir));
        r[64 + 64..64 + 80].try_into().unwrap()
    }
}

fn negotiate_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&36u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // dialect count
    b.extend_from_slice(&1u16.to_le_bytes()); // signing enabled
    b.extend_from_slice(&[0; 2]);
    b.extend_from_slice(&[0; 4]); // capabilities
    b.extend_from_slice(&[0x11; 16]); // client guid
    b.extend_from_slice(&[0; 8]); // contexts (none: 2.1)
    b.extend_from_slice(&0x0210u16.to_le_bytes());
    b
}

fn session_setup_body(token: &[u8]) -> Vec<u8> {
    let mut b = vec![25, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&88u16.to_le_bytes());
    b.extend_from_slice(&(token.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(token);
    b
}

fn tree_connect_body(path: &[u8]) -> Vec<u8> {
    let mut b = vec![9, 0, 0, 0];
    b.extend_from_slice(&72u16.to_le_bytes());
    b.extend_from_slice(&(path.len() as u16).to_le_bytes());
    b.extend_from_slice(path);
    b
}

fn create_body(name: &[u8], dir: bool) -> Vec<u8> {
    let mut b = vec![57, 0, 0, 0];
    b.extend_from_slice(&2u32.to_le_bytes()); // impersonation
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&0x0012_019Fu32.to_le_bytes()); // read/write/delete-ish
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&7u32.to_le_bytes()); // share all
    b.extend_from_slice(&3u32.to_le_bytes()); // open-if
    b.extend_from_slice(&(if dir { 1u32 } else { 0x40 }).to_le_bytes());
    b.extend_from_slice(&120u16.to_le_bytes());
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0; 8]); // no contexts
    b.extend_from_slice(name);
    if name.is_empty() {
        b.push(0);
    }
    b
}

/// A well-formed request body for `cmd` and the body offsets of its (offset, length)
/// buffer fields, if it has one: (offset field position, width, length field position,
/// width).
struct Template {
    body: Vec<u8>,
    buffer: Option<(usize, usize, usize, usize)>,
}

fn template(cmd: u16, file: [u8; 16], dir: [u8; 16], path: &[u8]) -> Template {
    let mut b: Vec<u8>;
    let p16 = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_le_bytes());
    let p32 = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
    let mut buffer = None;
    match cmd {
        0 => {
            b = negotiate_body();
            buffer = Some((28, 4, 32, 2)); // negotiate contexts (offset, count)
        }
        1 => {
            b = session_setup_body(b"NTLMSSP\0\x01\0\0\0\x07\x82\x08\xa2");
            buffer = Some((12, 2, 14, 2));
        }
        2 | 4 | 12 | 13 => b = vec![4, 0, 0, 0],
        3 => {
            b = tree_connect_body(path);
            buffer = Some((4, 2, 6, 2));
        }
        5 => {
            b = create_body(&utf16le("malformed.txt"), false);
            buffer = Some((44, 2, 46, 2));
        }
        6 | 7 => {
            b = vec![24, 0, 0, 0, 0, 0, 0, 0];
            b.extend_from_slice(&file);
        }
        8 => {
            b = vec![49, 0, 0x50, 0];
            p32(&mut b, 16);
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&file);
            b.extend_from_slice(&[0; 16]);
            b.push(0);
        }
        9 => {
            b = vec![49, 0];
            p16(&mut b, 112);
            p32(&mut b, 4);
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&file);
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(b"data");
            buffer = Some((2, 2, 4, 4));
        }
        10 => {
            b = vec![48, 0, 1, 0, 0, 0, 0, 0];
            b.extend_from_slice(&file);
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&1u64.to_le_bytes());
            p32(&mut b, 0x12); // exclusive | fail immediately
            p32(&mut b, 0);
        }
        11 => {
            b = vec![57, 0, 0, 0];
            p32(&mut b, 0x0009_00C0); // FSCTL_CREATE_OR_GET_OBJECT_ID
            b.extend_from_slice(&file);
            p32(&mut b, 120);
            p32(&mut b, 8);
            p32(&mut b, 0);
            p32(&mut b, 120);
            p32(&mut b, 0);
            p32(&mut b, 64);
            p32(&mut b, 1);
            p32(&mut b, 0);
            b.extend_from_slice(&[0; 8]);
            buffer = Some((24, 4, 28, 4));
        }
        14 => {
            b = vec![33, 0, 1, 0, 0, 0, 0, 0];
            b.extend_from_slice(&dir);
            p16(&mut b, 96);
            p16(&mut b, 2);
            p32(&mut b, 4096);
            b.extend_from_slice(&utf16le("*"));
            buffer = Some((24, 2, 26, 2));
        }
        15 => {
            b = vec![32, 0, 0, 0];
            p32(&mut b, 4096);
            b.extend_from_slice(&dir);
            p32(&mut b, 1);
            p32(&mut b, 0);
        }
        16 => {
            b = vec![41, 0, 1, 5]; // file info, FileStandardInformation
            p32(&mut b, 4096);
            p16(&mut b, 0);
            p16(&mut b, 0);
            p32(&mut b, 0);
            p32(&mut b, 0);
            p32(&mut b, 0);
            b.extend_from_slice(&file);
            b.push(0);
            buffer = Some((8, 2, 12, 4));
        }
        17 => {
            b = vec![33, 0, 1, 20]; // file info, FileEndOfFileInformation
            p32(&mut b, 8);
            p16(&mut b, 96);
            p16(&mut b, 0);
            p32(&mut b, 0);
            b.extend_from_slice(&file);
            b.extend_from_slice(&0u64.to_le_bytes());
            buffer = Some((8, 2, 4, 4));
        }
        18 => {
            b = vec![24, 0, 0, 0, 0, 0, 0, 0];
            b.extend_from_slice(&file);
        }
        _ => b = vec![4, 0, 0, 0],
    }
    Template { body: b, buffer }
}

fn put(b: &mut [u8], at: usize, width: usize, v: u32) {
    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// Which malformation.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Truncated,
    StructureSize,
    BufferOutside,
}

fn malform(t: &Template, kind: Kind) -> Option<Vec<u8>> {
    let mut b = t.body.clone();
    match kind {
        // StructureSize (and the first fixed bytes) only: the fixed part is cut short.
        Kind::Truncated => b.truncate(if b.len() > 4 { 4 } else { 2 }),
        Kind::StructureSize => {
            let ss = u16::from_le_bytes([b[0], b[1]]);
            b[..2].copy_from_slice(&(ss + 2).to_le_bytes());
        }
        Kind::BufferOutside => {
            let (off, ow, len, lw) = t.buffer?;
            // Length far past the end; offset unchanged (the NEGOTIATE context count is
            // a count: point its offset past the end instead).
            if len == 32 {
                // Contexts only count for 3.1.1.
                put(&mut b, 36, 2, 0x0311);
                put(&mut b, off, ow, 0xFFF8);
                put(&mut b, len, lw, 1);
            } else {
                put(&mut b, len, lw, 0x4000);
            }
        }
    }
    Some(b)
}

/// A fresh connection still negotiates: the server is alive and accepting.
fn alive(srv: &Server, what: &str) {
    let mut c = Cli::connect(srv);
    c.send(0, &negotiate_body());
    match c.recv() {
        Ok(r) => assert_eq!(le16(&r, 64 + 4), 0x0210, "after {what}"),
        Err(o) => panic!("server not answering NEGOTIATE after {what}: {o:?}"),
    }
}

const COMMANDS: [u16; 21] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0xFFFF,
];

/// MS-SMB2 answer for a malformed request body of `cmd`.
fn expected(cmd: u16, kind: Kind) -> Outcome {
    match (cmd, kind) {
        // CANCEL never gets a response (3.3.5.16).
        (12, _) => Outcome::NoReply,
        _ => Outcome::Status(INVALID_PARAMETER),
    }
}

#[test]
fn malformed_requests() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    let t0 = Instant::now();
    let mut observed = Vec::new();
    let mut mismatches = Vec::new();

    for &cmd in &COMMANDS {
        for kind in [Kind::Truncated, Kind::StructureSize, Kind::BufferOutside] {
            let (mut c, file, dir, path) = if cmd == 0 {
                // A malformed NEGOTIATE as the first request of a connection.
                (Cli::connect(&srv), [0; 16], [0; 16], Vec::new())
            } else if cmd == 1 {
                let mut c = Cli::connect(&srv);
                c.negotiate();
                (c, [0; 16], [0; 16], Vec::new())
            } else {
                let mut c = Cli::login(&srv);
                let file = c.open("m.txt", false);
                let dir = c.open("", true);
                let path = utf16le(&format!("\\\\{}\\{}", srv.host, srv.share));
                (c, file, dir, path)
            };
            let t = template(cmd, file, dir, &path);
            let Some(body) = malform(&t, kind) else {
                continue;
            };
            c.send(cmd, &body);
            let got = match c.recv_within(Duration::from_millis(if cmd == 12 { 300 } else { 5000 }))
            {
                Ok(r) => Outcome::Status(u32::from_le_bytes([r[8], r[9], r[10], r[11]])),
                Err(o) => o,
            };
            observed.push(format!("cmd {cmd:#06x} {kind:?}: {got:x?}"));
            if got != expected(cmd, kind) {
                mismatches.push(format!(
                    "command {cmd:#x} {kind:?}: got {got:x?}, want {:x?}",
                    expected(cmd, kind)
                ));
            }
            // The connection stays usable after an error response.
            if got != Outcome::Closed && cmd == 0 {
                c.negotiate();
            } else if got != Outcome::Closed {
                c.send(13, &[4, 0, 0, 0]);
                assert_eq!(
                    c.outcome(),
                    Outcome::Status(0),
                    "ECHO after {cmd:#x} {kind:?}"
                );
            }
            alive(&srv, &format!("command {cmd:#x} {kind:?}"));
        }
    }

    // (d) Oversized frames: a length over the (pre-)negotiated maximum is a disconnect,
    // before the body is sent (the server must not wait for / allocate it).
    for negotiated in [false, true] {
        let mut c = Cli::connect(&srv);
        if negotiated {
            c.negotiate();
        }
        let _ = c.s.write_all(&[0, 0xFF, 0xFF, 0xFF]);
        let got = c.outcome();
        observed.push(format!(
            "oversized frame (negotiated={negotiated}): {got:?}"
        ));
        assert_eq!(got, Outcome::Closed, "oversized frame");
        alive(&srv, "oversized frame");
    }

    // (e) A wrong signature on a signed session: STATUS_ACCESS_DENIED (3.3.5.2.4), and
    // the session keeps working with correct signatures.
    {
        let mut c = Cli::login(&srv);
        let mut m = c.message(13, &[4, 0, 0, 0]);
        m[50] ^= 0xFF;
        c.send_frame(&m);
        let got = c.outcome();
        observed.push(format!("bad signature: {got:x?}"));
        assert_eq!(got, Outcome::Status(ACCESS_DENIED), "bad signature");
        let mut m = c.message(3, &tree_connect_body(&utf16le("\\\\x\\share")));
        m[63] ^= 1;
        c.send_frame(&m);
        assert_eq!(c.outcome(), Outcome::Status(ACCESS_DENIED), "bad signature");
        c.send(13, &[4, 0, 0, 0]);
        assert_eq!(
            c.outcome(),
            Outcome::Status(0),
            "signed ECHO after bad ones"
        );
        alive(&srv, "bad signature");
    }

    // (f) Compound chains with a bad NextCommand: the chain cannot be split, the
    // server disconnects.
    assert!(mismatches.is_empty(), "{mismatches:#?}");

    for (what, next) in [
        ("unaligned", 68u32),
        ("past the end", 4096),
        ("shorter than a header", 8),
    ] {
        let mut c = Cli::login(&srv);
        let mut a = c.message(13, &[4, 0, 0, 0, 0, 0, 0, 0]);
        a[20..24].copy_from_slice(&next.to_le_bytes());
        let b = c.message(13, &[4, 0, 0, 0]);
        c.key = None;
        a.extend_from_slice(&b);
        c.send_frame(&a);
        let got = c.outcome();
        observed.push(format!("compound NextCommand {what}: {got:?}"));
        assert_eq!(got, Outcome::Closed, "compound NextCommand {what}");
        alive(&srv, &format!("compound NextCommand {what}"));
    }

    // (g) Non-zero first byte of the Direct TCP header, (h) no SMB2 magic: disconnect
    // (MS-SMB2 2.1, 3.3.5.2).
    for negotiated in [false, true] {
        let mut c = Cli::connect(&srv);
        if negotiated {
            c.negotiate();
        }
        let m = c.message(13, &[4, 0, 0, 0]);
        let mut f = vec![0x81, 0, 0, m.len() as u8];
        f.extend_from_slice(&m);
        let _ = c.s.write_all(&f);
        let got = c.outcome();
        observed.push(format!(
            "nonzero NetBIOS byte (negotiated={negotiated}): {got:?}"
        ));
        assert_eq!(got, Outcome::Closed, "non-zero first byte");
        alive(&srv, "non-zero first byte");

        let mut c = Cli::connect(&srv);
        if negotiated {
            c.negotiate();
        }
        let mut m = c.message(13, &[4, 0, 0, 0]);
        m[..4].copy_from_slice(b"GARB");
        c.send_frame(&m);
        let got = c.outcome();
        observed.push(format!("garbage magic (negotiated={negotiated}): {got:?}"));
        assert_eq!(got, Outcome::Closed, "garbage magic");
        alive(&srv, "garbage magic");
    }

    for o in &observed {
        eprintln!("{o}");
    }
    assert_smb_ok(
        "smbclient ls after malformed traffic",
        &srv.smbclient(&[], "ls"),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
