//! Samba's smbclient against Holdfast, once per dialect: put a 3 MiB random file, ls, mkdir,
//! rename into the directory, get it back (SHA-256 compared), rm, rmdir, checking the
//! server-side directory after every step.

use std::fs;
use std::path::Path;

use holdfast_tests::{
    assert_smb_ok, peers_available, random_bytes, random_name, sha256_file, Server,
};

const SIZE: usize = 3 * 1024 * 1024;

fn roundtrip(dialect: &str, extra: &[&str]) {
    if !peers_available(&["smbclient"]) {
        return;
    }
    let srv = Server::start();
    let local = tempfile::tempdir().expect("tempdir");
    let src = local.path().join("src.bin");
    let back = local.path().join("back.bin");
    fs::write(&src, random_bytes(SIZE)).expect("write src");
    let want = sha256_file(&src);

    let tag = format!("{}-{}", dialect.to_lowercase(), random_name(8));
    let file = format!("hf-{tag}.bin");
    let dir = format!("hfdir-{tag}");
    let renamed = format!("moved-{tag}.bin");
    let server_file = srv.localdir.join(&file);
    let server_dir = srv.localdir.join(&dir);
    let server_renamed = server_dir.join(&renamed);

    let min = format!("--option=client min protocol={dialect}");
    let max = format!("--option=client max protocol={dialect}");
    let mut args: Vec<&str> = vec![&min, &max];
    args.extend_from_slice(extra);
    let smb = |what: &str, cmds: &str| {
        let out = srv.smbclient(&args, cmds);
        assert_smb_ok(&format!("[{dialect} {extra:?}] {what}"), &out);
        out
    };

    // put
    smb("put", &format!("put {} {file}", src.display()));
    let meta = fs::metadata(&server_file).unwrap_or_else(|e| {
        panic!(
            "after put, {} missing on the server: {e}",
            server_file.display()
        )
    });
    assert_eq!(meta.len(), SIZE as u64, "size on the server after put");
    assert_eq!(
        sha256_file(&server_file),
        want,
        "content on the server after put"
    );

    // ls
    let out = smb("ls", "ls");
    assert!(
        out.stdout.contains(&file),
        "ls does not show {file}:\n{out}"
    );
    let out = smb("ls FILE", &format!("ls {file}"));
    assert!(
        out.stdout.contains(&SIZE.to_string()),
        "ls {file} does not show its size {SIZE}:\n{out}"
    );

    // mkdir
    smb("mkdir", &format!("mkdir {dir}"));
    assert!(
        server_dir.is_dir(),
        "after mkdir, {} is not a directory",
        server_dir.display()
    );

    // rename into the new directory
    smb("rename", &format!("rename {file} {dir}\\{renamed}"));
    assert!(
        !server_file.exists(),
        "after rename, {} still exists",
        server_file.display()
    );
    assert!(
        server_renamed.is_file(),
        "after rename, {} missing",
        server_renamed.display()
    );
    let out = smb("ls DIR", &format!("cd {dir}; ls"));
    assert!(
        out.stdout.contains(&renamed),
        "ls in {dir} does not show {renamed}:\n{out}"
    );

    // get
    smb("get", &format!("get {dir}\\{renamed} {}", back.display()));
    assert_eq!(sha256_file(&back), want, "SHA-256 of the file read back");

    // rm
    smb("rm", &format!("rm {dir}\\{renamed}"));
    assert!(
        !server_renamed.exists(),
        "after rm, {} still exists",
        server_renamed.display()
    );

    // rmdir
    smb("rmdir", &format!("rmdir {dir}"));
    assert!(
        !server_dir.exists(),
        "after rmdir, {} still exists",
        server_dir.display()
    );
    assert!(!Path::new(&server_file).exists());
}

#[test]
fn smb2_02() {
    roundtrip("SMB2_02", &[]);
}

#[test]
fn smb2_10() {
    roundtrip("SMB2_10", &[]);
}

#[test]
fn smb3_00() {
    roundtrip("SMB3_00", &[]);
}

#[test]
fn smb3_02() {
    roundtrip("SMB3_02", &[]);
}

#[test]
fn smb3_11() {
    roundtrip("SMB3_11", &[]);
}

#[test]
fn smb3_11_signing_required() {
    roundtrip("SMB3_11", &["--option=client signing=required"]);
}
