//! File-descriptor passing around the handle keeper: its listening socket,
//! systemd's notify socket (`FDSTORE=1`) and the fds systemd hands back on
//! start (`LISTEN_FDS`). Passing fds between keeper and smbd over the
//! SEQPACKET socket itself is done with `tokio-seqpacket`, which owns them safely.

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// At most this many fds per datagram (the kernel's SCM_MAX_FD).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Binds a non-blocking, close-on-exec `SOCK_SEQPACKET` listener at `path`
/// with permission bits `mode`, owned by `owner` (uid, gid) when given.
/// A stale socket file at `path` is removed first; any other file is an error.
/// The mode and owner are set between bind and listen, so nobody can connect
/// while the socket still has the umask's permissions.
pub fn seqpacket_listener(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(nix_io)?;
    let addr = UnixAddr::new(path).map_err(nix_io)?;
    socket::bind(sock.as_raw_fd(), &addr).map_err(nix_io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    socket::listen(&sock, Backlog::new(128).map_err(nix_io)?).map_err(nix_io)?;
    Ok(sock)
}

/// Sends one datagram to systemd's notify socket `addr` (a path, or an
/// abstract name written with a leading `@`), with `fds` attached.
pub fn notify_send(addr: &OsStr, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = addr.as_bytes();
    let uaddr = match bytes.first() {
        Some(b'@') => UnixAddr::new_abstract(&bytes[1..]),
        Some(b'/') => UnixAddr::new(Path::new(addr)),
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
    .map_err(nix_io)?;
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_io)?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [IoSlice::new(payload)];
    loop {
        match socket::sendmsg(
            sock.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            Some(&uaddr),
        ) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(nix_io(e)),
        }
    }
}

/// Receives one datagram (or SEQPACKET message) with any fds attached; the
/// fds arrive close-on-exec. Returns the byte count and the fds.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(nix_io(e)),
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(nix_io)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: SCM_RIGHTS just installed `fd` in our fd table for this
                // call; nothing else in the process knows the number yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}

static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the fds systemd passed (`LISTEN_PID`, `LISTEN_FDS`,
/// `LISTEN_FDNAMES`), marks them close-on-exec and removes the variables from
/// the environment. Returns `(name, fd)` pairs; names default to "unknown".
/// Only the first call in a process can return fds (later calls return none),
/// so no fd is ever owned twice. Call it before any other fd is opened.
pub fn take_listen_fds() -> io::Result<Vec<(String, OwnedFd)>> {
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    let inval = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if pid
        .trim()
        .parse::<u32>()
        .map_err(|_| inval("bad LISTEN_PID"))?
        != std::process::id()
    {
        // Meant for another process (e.g. our parent); not ours to take.
        return Ok(Vec::new());
    }
    let n: RawFd = count.trim().parse().map_err(|_| inval("bad LISTEN_FDS"))?;
    if !(0..=65_536).contains(&n) {
        return Err(inval("LISTEN_FDS out of range"));
    }
    let names: Vec<&str> = names
        .as_deref()
        .map(|s| s.split(':').collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let raw = LISTEN_FDS_START + i;
        // SAFETY: F_GETFD only checks that `raw` is an open fd.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: systemd passed fds LISTEN_FDS_START.. to this pid (checked
        // above); the once-only guard means no other owner exists.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: F_SETFD with an int flag touches no memory.
        crate::cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
        let name = names
            .get(i as usize)
            .copied()
            .unwrap_or("unknown")
            .to_string();
        out.push((name, fd));
    }
    Ok(out)
}

/// Arranges for `cmd`'s child to receive `fds` as fds 3, 4, ... (what systemd
/// does for `LISTEN_FDS`). The caller still sets `LISTEN_FDS`, `LISTEN_FDNAMES`
/// and a `LISTEN_PID` equal to the child's pid (e.g. through `sh -c`).
pub fn pass_listen_fds(cmd: &mut Command, fds: Vec<OwnedFd>) -> io::Result<()> {
    let n = fds.len() as RawFd;
    // Move every source above the target range first so the dup2 calls in the
    // child can never overwrite a source that is still to be copied.
    let mut high = Vec::with_capacity(fds.len());
    for fd in &fds {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd we then own exclusively.
        let raw = crate::cvt(unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, LISTEN_FDS_START + n)
        })?;
        // SAFETY: `raw` was just created by fcntl above and is owned by nobody else.
        high.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    drop(fds);
    // SAFETY: the closure runs between fork and exec and only calls dup2,
    // which is async-signal-safe; it allocates nothing. The fds it reads stay
    // open in the parent until the Command (which owns `high`) is dropped.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in high.iter().enumerate() {
                // dup2 clears close-on-exec on the new fd.
                if libc::dup2(fd.as_raw_fd(), LISTEN_FDS_START + i as RawFd) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn notify_with_fds_shares_the_open_file_description() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&sock_path).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello world").unwrap();
        notify_send(sock_path.as_os_str(), b"FDSTORE=1\nFDNAME=7", &[f.as_fd()]).unwrap();
        let mut buf = [0u8; 128];
        let (n, fds) = recv_with_fds(rx.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"FDSTORE=1\nFDNAME=7");
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
        // Same description: the offset moved by one side is seen by the other.
        f.seek(SeekFrom::Start(6)).unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "world");
    }

    #[test]
    fn abstract_notify_address() {
        let name = format!("hf-kmod-test-{}", std::process::id());
        let addr = UnixAddr::new_abstract(name.as_bytes()).unwrap();
        let rx = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(rx.as_raw_fd(), &addr).unwrap();
        notify_send(OsStr::new(&format!("@{name}")), b"READY=1", &[]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(rx.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"READY=1"[..], 0));
        assert!(notify_send(OsStr::new("relative"), b"x", &[]).is_err());
    }

    #[test]
    fn listener_mode_and_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.sock");
        let a = seqpacket_listener(&p, 0o600, None).unwrap();
        drop(a);
        // The stale socket file is replaced.
        let _b = seqpacket_listener(&p, 0o600, None).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let f = dir.path().join("plain");
        std::fs::write(&f, b"").unwrap();
        assert!(seqpacket_listener(&f, 0o600, None).is_err());
    }
}
