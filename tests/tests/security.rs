//! The share boundary and the acting user, as a client sees them.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use holdfast_tests::{assert_smb_ok, python_smbprotocol_available, Server};

/// Symlinks inside the share that point outside it, and `..` paths, are refused.
#[test]
fn paths_cannot_leave_the_share() {
    if !python_smbprotocol_available() {
        return;
    }
    let srv = Server::start();
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), b"outside the share").expect("write");
    let outside_dir = secret.path().parent().expect("parent").to_path_buf();
    std::os::unix::fs::symlink(secret.path(), srv.localdir.join("abs-link")).expect("symlink");
    std::os::unix::fs::symlink(&outside_dir, srv.localdir.join("dir-link")).expect("symlink");
    std::os::unix::fs::symlink(
        "../../../../../../etc/hostname",
        srv.localdir.join("rel-link"),
    )
    .expect("symlink");
    let name = secret
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let via_dir = format!("dir-link\\{name}");
    let out = srv.python_script(
        "escape.py",
        &[
            "abs-link",
            "rel-link",
            via_dir.as_str(),
            "..\\..\\etc\\hostname",
            "a\\..\\..\\etc\\hostname",
        ],
        Duration::from_secs(60),
    );
    assert!(out.success(), "a path left the share:\n{out}");
    assert_eq!(out.stdout.matches("REFUSED").count(), 5, "{out}");
    // The server keeps serving after the attempts.
    let ok = srv.smbclient(&[], "ls");
    assert_smb_ok("ls after escape attempts", &ok);
}

/// Files a client creates belong to the Unix account its user maps to.
#[test]
fn files_are_created_as_the_authenticated_user() {
    if !holdfast_tests::peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    if srv.external {
        return;
    }
    let src = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(src.path(), b"owned").expect("write");
    let put = format!("put {} owned.txt; mkdir owned-dir", src.path().display());
    assert_smb_ok("put", &srv.smbclient(&[], &put));
    let share_owner = std::fs::metadata(&srv.localdir).expect("share").uid();
    for name in ["owned.txt", "owned-dir"] {
        let md = std::fs::metadata(srv.localdir.join(name)).expect("created entry");
        assert_ne!(md.uid(), 0, "{name} was created as root");
        assert_eq!(md.uid(), share_owner, "{name} not owned by the test user");
    }
}
