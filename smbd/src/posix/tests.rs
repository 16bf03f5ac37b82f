use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::*;
use crate::fsa::types::attr;
use crate::wire::NtStatus;
use kmod_interface::identity::Identity;

fn share() -> (tempfile::TempDir, ShareRoot) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("share")).unwrap();
    std::fs::write(t.path().join("outside"), b"secret").unwrap();
    let root = ShareRoot::open(t.path().join("share")).unwrap();
    (t, root)
}

fn req(create: CreateMode) -> OpenRequest {
    OpenRequest {
        read: true,
        write: true,
        create,
        mode: 0o644,
        ..OpenRequest::default()
    }
}

fn status(e: &std::io::Error) -> NtStatus {
    errno_to_status(e)
}

#[test]
fn create_open_stat_round_trip() {
    let (_t, root) = share();
    let r = OpenRequest {
        attributes: attr::HIDDEN,
        ..req(CreateMode::OpenOrCreate)
    };
    let o = open(&root, Path::new("f.txt"), &r).unwrap();
    assert!(o.created);
    assert!(o.meta.is_regular());
    assert_eq!(o.meta.attributes, attr::HIDDEN | attr::ARCHIVE);
    assert_eq!(write_at(o.fd.as_fd(), b"hello world", 0).unwrap(), 11);
    let mut buf = [0u8; 32];
    assert_eq!(read_at(o.fd.as_fd(), &mut buf, 6).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");
    fsync(o.fd.as_fd()).unwrap();

    let raw = kmod_interface::xattr::fget(o.fd.as_fd(), DOS_XATTR)
        .unwrap()
        .unwrap();
    assert_eq!(raw.len(), 13);
    assert_eq!(raw[0], 1);

    let again = open(&root, Path::new("f.txt"), &req(CreateMode::OpenOrCreate)).unwrap();
    assert!(!again.created);
    assert_eq!(again.meta.size, 11);
    assert_eq!(again.meta.file_id, o.meta.file_id);
    let e = open(&root, Path::new("f.txt"), &req(CreateMode::CreateNew)).unwrap_err();
    assert_eq!(status(&e), NtStatus::OBJECT_NAME_COLLISION);
    let e = open(&root, Path::new("missing"), &req(CreateMode::Open)).unwrap_err();
    assert_eq!(status(&e), NtStatus::OBJECT_NAME_NOT_FOUND);

    set_attributes(again.fd.as_fd(), attr::READONLY | attr::DIRECTORY).unwrap();
    assert_eq!(stat(o.fd.as_fd()).unwrap().attributes, attr::READONLY);
    set_attributes(again.fd.as_fd(), 0).unwrap();
    assert_eq!(stat(o.fd.as_fd()).unwrap().attributes, attr::NORMAL);

    // Truncating open.
    let t = OpenRequest {
        truncate: true,
        ..req(CreateMode::Open)
    };
    assert_eq!(open(&root, Path::new("f.txt"), &t).unwrap().meta.size, 0);
}

#[test]
fn creation_time_persists() {
    let (_t, root) = share();
    let o = open(&root, Path::new("c"), &req(CreateMode::CreateNew)).unwrap();
    let created = o.meta.creation_time;
    assert!(created > 0);
    let ct = 130_000_000_000_000_000u64; // 2012
    let wt = 131_000_000_000_000_000u64;
    set_times(o.fd.as_fd(), Some(ct), None, Some(wt), Some(1)).unwrap();
    drop(o);
    rename(&root, Path::new("c"), Path::new("d"), false).unwrap();
    let p = OpenRequest::default();
    let o = open(&root, Path::new("d"), &p).unwrap();
    assert!(kmod_interface::is_o_path(o.fd.as_fd()).unwrap());
    assert_eq!(o.meta.creation_time, ct);
    assert_eq!(o.meta.last_write_time, wt);
    // Writing data does not touch the stored creation time.
    let w = reopen(o.fd.as_fd(), false, true).unwrap();
    write_at(w.as_fd(), b"x", 0).unwrap();
    assert_eq!(stat(o.fd.as_fd()).unwrap().creation_time, ct);
}

#[test]
fn directories() {
    let (t, root) = share();
    let d = OpenRequest {
        directory: DirMode::MustBeDir,
        mode: 0o755,
        attributes: attr::SYSTEM,
        ..OpenRequest::default()
    };
    let o = open(
        &root,
        Path::new("dir"),
        &OpenRequest {
            create: CreateMode::CreateNew,
            ..d.clone()
        },
    )
    .unwrap();
    assert!(o.created && o.meta.is_dir());
    assert_eq!(o.meta.attributes, attr::SYSTEM | attr::DIRECTORY);
    assert!(!kmod_interface::is_o_path(o.fd.as_fd()).unwrap());
    open(&root, Path::new("dir/f"), &req(CreateMode::CreateNew)).unwrap();

    let e = open(&root, Path::new("dir/f"), &d).unwrap_err();
    assert_eq!(status(&e), NtStatus::NOT_A_DIRECTORY);
    let e = open(&root, Path::new("dir/f/x"), &req(CreateMode::Open)).unwrap_err();
    assert_eq!(status(&e), NtStatus::OBJECT_PATH_NOT_FOUND);
    let nd = OpenRequest {
        directory: DirMode::MustNotBeDir,
        ..OpenRequest::default()
    };
    let e = open(&root, Path::new("dir"), &nd).unwrap_err();
    assert_eq!(status(&e), NtStatus::FILE_IS_A_DIRECTORY);
    let r = open(&root, Path::new(""), &d).unwrap();
    assert!(r.meta.is_dir());
    let e = open(
        &root,
        Path::new(""),
        &OpenRequest {
            create: CreateMode::CreateNew,
            ..d.clone()
        },
    )
    .unwrap_err();
    assert_eq!(status(&e), NtStatus::OBJECT_NAME_COLLISION);

    let e = unlink(&root, Path::new("dir"), true).unwrap_err();
    assert_eq!(status(&e), NtStatus::DIRECTORY_NOT_EMPTY);
    unlink(&root, Path::new("dir/f"), false).unwrap();
    unlink(&root, Path::new("dir"), true).unwrap();
    assert!(!t.path().join("share/dir").exists());
    let e = unlink(&root, Path::new(""), true).unwrap_err();
    assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
}

#[test]
fn escapes_fail() {
    let (t, root) = share();
    symlink(t.path().join("outside"), t.path().join("share/abs")).unwrap();
    symlink("../outside", t.path().join("share/rel")).unwrap();
    std::fs::create_dir(t.path().join("share/sub")).unwrap();
    symlink("..", t.path().join("share/sub/up")).unwrap();
    let r = OpenRequest {
        read: true,
        ..OpenRequest::default()
    };
    for p in [
        "../outside",
        "abs",
        "rel",
        "sub/../../outside",
        "sub/up/../outside",
    ] {
        let e = open(&root, Path::new(p), &r).unwrap_err();
        assert_eq!(status(&e), NtStatus::ACCESS_DENIED, "{p}: {e}");
    }
    let e = open(&root, Path::new("/etc/passwd"), &r).unwrap_err();
    assert_eq!(status(&e), NtStatus::INVALID_PARAMETER);
    // A symlink staying inside resolves.
    std::fs::write(t.path().join("share/sub/in"), b"in").unwrap();
    symlink("sub/in", t.path().join("share/ok")).unwrap();
    open(&root, Path::new("ok"), &r).unwrap();
    open(&root, Path::new("sub/up/sub/in"), &r).unwrap();
    // Creating through an escaping path fails too.
    let e = open(&root, Path::new("../new"), &req(CreateMode::CreateNew)).unwrap_err();
    assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
    assert!(!t.path().join("new").exists());
    let e = rename(&root, Path::new("ok"), Path::new("../moved"), true).unwrap_err();
    assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
    let e = unlink(&root, Path::new("sub/up/../outside"), false).unwrap_err();
    assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
    assert!(t.path().join("outside").exists());
}

#[test]
fn rename_no_replace() {
    let (t, root) = share();
    std::fs::write(t.path().join("share/a"), b"a").unwrap();
    std::fs::write(t.path().join("share/b"), b"b").unwrap();
    std::fs::create_dir(t.path().join("share/d")).unwrap();
    let e = rename(&root, Path::new("a"), Path::new("b"), false).unwrap_err();
    assert_eq!(status(&e), NtStatus::OBJECT_NAME_COLLISION);
    rename(&root, Path::new("a"), Path::new("d/a2"), false).unwrap();
    rename(&root, Path::new("d/a2"), Path::new("b"), true).unwrap();
    assert_eq!(std::fs::read(t.path().join("share/b")).unwrap(), b"a");
}

#[test]
fn read_dir_lists() {
    let (t, root) = share();
    let s = t.path().join("share");
    std::fs::write(s.join("file"), b"12345").unwrap();
    std::fs::create_dir(s.join("sub")).unwrap();
    symlink("file", s.join("link")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"bad\xff");
    std::fs::write(s.join(bad), b"").unwrap();
    let h = OpenRequest {
        attributes: attr::HIDDEN,
        ..req(CreateMode::CreateNew)
    };
    open(&root, Path::new("hidden"), &h).unwrap();

    let d = open(&root, Path::new(""), &OpenRequest::default()).unwrap();
    let mut names: Vec<_> = read_dir(d.fd.as_fd()).unwrap();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    let n: Vec<_> = names.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(n, [".", "..", "file", "hidden", "link", "sub"]);
    let get = |n: &str| names.iter().find(|e| e.name == n).unwrap();
    assert_eq!(get("file").meta.as_ref().unwrap().size, 5);
    assert_eq!(get("file").meta.as_ref().unwrap().attributes, attr::ARCHIVE);
    assert!(get("sub").meta.as_ref().unwrap().is_dir());
    assert!(get("link").meta.is_none());
    assert_eq!(
        get("hidden").meta.as_ref().unwrap().attributes,
        attr::HIDDEN | attr::ARCHIVE
    );
    // Listing twice through the same fd gives the same answer.
    assert_eq!(read_dir(d.fd.as_fd()).unwrap().len(), 6);
}

#[test]
fn attribute_only_open_as_unprivileged() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let (t, root) = share();
    for p in [t.path(), &t.path().join("share")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let r = OpenRequest {
        attributes: attr::HIDDEN,
        mode: 0,
        ..req(CreateMode::CreateNew)
    };
    open(&root, Path::new("locked"), &r).unwrap();
    std::fs::set_permissions(
        t.path().join("share/locked"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let nobody = Identity {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            run_as(&nobody, || {
                let o = open(&root, Path::new("locked"), &OpenRequest::default()).unwrap();
                assert!(kmod_interface::is_o_path(o.fd.as_fd()).unwrap());
                assert_eq!(o.meta.attributes, attr::HIDDEN | attr::ARCHIVE);
                assert_eq!(o.meta.mode & 0o7777, 0);
                let rd = OpenRequest {
                    read: true,
                    ..OpenRequest::default()
                };
                let e = open(&root, Path::new("locked"), &rd).unwrap_err();
                assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
                let e = reopen(o.fd.as_fd(), true, false).unwrap_err();
                assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
                // Not the owner, no write permission: attributes stay as they are.
                let e = set_attributes(o.fd.as_fd(), 0).unwrap_err();
                assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
                let e = open(&root, Path::new("mine"), &req(CreateMode::CreateNew)).unwrap_err();
                assert_eq!(status(&e), NtStatus::ACCESS_DENIED);
            })
            .unwrap();
        });
    });
}

#[test]
fn owner_sets_attributes_on_read_only_file() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let (t, root) = share();
    for p in [t.path(), &t.path().join("share")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let user = Identity {
                uid: 1234,
                gid: 1234,
                groups: vec![],
            };
            run_as(&user, || {
                let r = OpenRequest {
                    attributes: attr::READONLY,
                    mode: 0o444,
                    ..req(CreateMode::CreateNew)
                };
                let o = open(&root, Path::new("ro"), &r).unwrap();
                assert_eq!(o.meta.uid, 1234);
                assert_eq!(o.meta.attributes, attr::READONLY | attr::ARCHIVE);
                set_attributes(o.fd.as_fd(), attr::ARCHIVE).unwrap();
                assert_eq!(stat(o.fd.as_fd()).unwrap().attributes, attr::ARCHIVE);
            })
            .unwrap();
        });
    });
}

#[test]
fn sizes_and_volume() {
    let (_t, root) = share();
    let o = open(&root, Path::new("s"), &req(CreateMode::CreateNew)).unwrap();
    let p = reopen(o.fd.as_fd(), false, false).unwrap();
    assert!(kmod_interface::is_o_path(p.as_fd()).unwrap());
    set_size(p.as_fd(), 4096).unwrap();
    assert_eq!(stat(o.fd.as_fd()).unwrap().size, 4096);
    allocate(p.as_fd(), 1 << 20).unwrap();
    let m = stat(o.fd.as_fd()).unwrap();
    assert_eq!(m.size, 4096);
    assert!(m.allocation >= 1 << 20);
    allocate(o.fd.as_fd(), 10).unwrap();
    assert_eq!(stat(o.fd.as_fd()).unwrap().size, 4096);
    fchmod_mode(p.as_fd(), 0o600).unwrap();
    assert_eq!(stat(p.as_fd()).unwrap().mode & 0o7777, 0o600);
    fchown(p.as_fd(), 5, 6).unwrap();
    let m = stat(p.as_fd()).unwrap();
    assert_eq!((m.uid, m.gid), (5, 6));
    let v = fs_stats(root.fd()).unwrap();
    assert!(v.block_size > 0 && v.total_blocks >= v.free_blocks && v.name_max >= 255);
}

#[test]
fn named_streams_live_in_xattrs() {
    let (_t, root) = share();
    let o = open(&root, Path::new("s.txt"), &req(CreateMode::CreateNew)).unwrap();
    let probe = open(&root, Path::new("s.txt"), &OpenRequest::probe()).unwrap();
    let fd = probe.fd.as_fd(); // O_PATH works as well as a data fd
    assert!(streams::list(fd).unwrap().is_empty());
    streams::write(fd, "Stream One", b"test data").unwrap();
    streams::write(o.fd.as_fd(), "\u{5}odd\n?*", b"").unwrap();
    assert_eq!(
        streams::list(fd).unwrap(),
        vec![
            ("\u{5}odd\n?*".to_string(), 0),
            ("Stream One".to_string(), 9)
        ]
    );
    assert_eq!(
        streams::read(fd, "Stream One").unwrap().as_deref(),
        Some(&b"test data"[..])
    );
    assert_eq!(streams::read(fd, "stream one").unwrap(), None);
    // The DOS attributes xattr is not a stream.
    assert!(kmod_interface::xattr::fget(fd, DOS_XATTR)
        .unwrap()
        .is_some());
    assert_eq!(streams::names(fd).unwrap().len(), 2);

    // One xattr value holds at most 64 KiB: more is a full disk. Some file
    // systems hold less (ext4 without ea_inode: about one block per file).
    let max = crate::fsa::streams::MAX_STREAM_SIZE as usize;
    let e = streams::write(fd, "big", &vec![7u8; max + 1]).unwrap_err();
    assert_eq!(status(&e), NtStatus::DISK_FULL);
    match streams::write(fd, "big", &vec![7u8; max]) {
        Ok(()) => assert_eq!(streams::read(fd, "big").unwrap().unwrap().len(), max),
        Err(e) => assert_eq!(status(&e), NtStatus::DISK_FULL),
    }
    streams::write(fd, "big", b"small").unwrap();

    streams::remove(fd, "Stream One").unwrap();
    streams::remove(fd, "Stream One").unwrap(); // already gone is fine
    assert_eq!(streams::names(fd).unwrap(), vec!["\u{5}odd\n?*", "big"]);
    streams::remove_all(fd).unwrap();
    assert!(streams::list(fd).unwrap().is_empty());
    assert!(kmod_interface::xattr::fget(fd, DOS_XATTR)
        .unwrap()
        .is_some());
}

/// DELETE needs a writable, searchable parent; in a sticky directory only the
/// file's or the directory's owner may delete.
#[test]
fn may_delete_follows_parent_permissions_and_sticky_bit() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let (t, root) = share();
    let share_dir = t.path().join("share");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["open", "closed", "sticky"] {
        std::fs::create_dir(share_dir.join(d)).unwrap();
        std::fs::write(share_dir.join(d).join("f"), b"x").unwrap();
    }
    std::fs::set_permissions(&share_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        share_dir.join("open"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(
        share_dir.join("closed"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        share_dir.join("sticky"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let nobody = Identity {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            run_as(&nobody, || {
                assert!(may_delete(&root, Path::new("open/f"), 0).unwrap());
                assert!(!may_delete(&root, Path::new("closed/f"), 0).unwrap());
                assert!(
                    !may_delete(&root, Path::new("sticky/f"), 0).unwrap(),
                    "not the owner"
                );
                assert!(
                    may_delete(&root, Path::new("sticky/f"), 65534).unwrap(),
                    "owner"
                );
                assert!(
                    !may_delete(&root, Path::new(""), 65534).unwrap(),
                    "share root"
                );
            })
            .unwrap();
        });
    });
    // Root may always.
    assert!(may_delete(&root, Path::new("closed/f"), 0).unwrap());
}
