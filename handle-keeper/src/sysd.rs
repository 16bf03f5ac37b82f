//! The keeper's side of systemd's notify protocol: READY/STATUS/STOPPING and
//! the fd store (FDSTORE=1 / FDSTOREREMOVE=1), so kept open file descriptions
//! survive a keeper restart.

use std::ffi::OsString;
use std::io;
use std::os::fd::BorrowedFd;

use kmod_interface::fdpass::notify_send;

/// Where to send notifications; a no-op when systemd gave no NOTIFY_SOCKET.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    addr: Option<OsString>,
}

/// fd store names are at most 255 bytes of printable ASCII without ':'.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl Notifier {
    /// Takes NOTIFY_SOCKET from the environment (and removes it, so nothing
    /// this process might start talks to systemd in its name).
    pub fn from_env() -> Notifier {
        let addr = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty());
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier { addr }
    }

    pub fn disabled() -> Notifier {
        Notifier { addr: None }
    }

    pub fn available(&self) -> bool {
        self.addr.is_some()
    }

    fn send(&self, msg: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        match &self.addr {
            Some(a) => notify_send(a, msg.as_bytes(), fds),
            None => Ok(()),
        }
    }

    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={status}"), &[])
    }

    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={status}"), &[])
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1", &[])
    }

    /// Stores `fd` under `name`. FDPOLL=0: systemd must not drop a kept file
    /// because poll() reports something on it.
    pub fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        if !valid_name(name) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.send(&format!("FDSTORE=1\nFDNAME={name}\nFDPOLL=0"), &[fd])
    }

    /// Removes every stored fd named `name`.
    pub fn remove_fd(&self, name: &str) -> io::Result<()> {
        if !valid_name(name) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("12"));
        assert!(!valid_name(""));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(256)));
        // Without a socket every call is a successful no-op.
        let n = Notifier::disabled();
        assert!(!n.available());
        n.ready("x").unwrap();
        n.remove_fd("1").unwrap();
    }
}
