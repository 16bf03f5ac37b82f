//! SMB3 encryption seen by smbclient: every cipher, and shares that require it.

use holdfast_tests::{
    assert_smb_ok, peers_available, random_bytes, random_name, sha256_file, Server,
};

fn round_trip(srv: &Server, extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.bin");
    let back = dir.path().join("back.bin");
    std::fs::write(&src, random_bytes(1 << 20)).expect("write");
    let name = random_name(12);
    let cmds = format!(
        "put {} {name}; get {name} {}; rm {name}",
        src.display(),
        back.display()
    );
    assert_smb_ok(
        &format!("encrypted round trip {extra:?}"),
        &srv.smbclient(extra, &cmds),
    );
    assert_eq!(
        sha256_file(&src),
        sha256_file(&back),
        "data changed {extra:?}"
    );
}

/// `--client-protection=encrypt` with each cipher at 3.1.1, and AES-128-CCM (the
/// only 3.0/3.0.2 cipher) at SMB3_00 and SMB3_02.
#[test]
fn every_cipher_round_trips() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    for cipher in ["AES-128-CCM", "AES-128-GCM", "AES-256-CCM", "AES-256-GCM"] {
        let alg = format!("--option=client smb3 encryption algorithms={cipher}");
        round_trip(
            &srv,
            &[
                "--client-protection=encrypt",
                &alg,
                "--option=client max protocol=SMB3_11",
            ],
        );
    }
    for proto in ["SMB3_00", "SMB3_02"] {
        let p = format!("--option=client max protocol={proto}");
        round_trip(&srv, &["--client-protection=encrypt", &p]);
    }
}

/// `smb encrypt = required` on a share: encrypting clients work without asking,
/// a client that cannot encrypt (SMB 2.1) is refused at tree connect.
#[test]
fn share_that_requires_encryption() {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start_with("smb encrypt = required");
    round_trip(&srv, &["--option=client max protocol=SMB3_11"]);
    let out = srv.smbclient(&["--option=client max protocol=SMB2_10"], "ls");
    assert!(
        !out.success(),
        "SMB 2.1 client got into an encrypt-required share:\n{out}"
    );
    assert_eq!(
        out.nt_status().as_deref(),
        Some("NT_STATUS_ACCESS_DENIED"),
        "{out}"
    );
}
