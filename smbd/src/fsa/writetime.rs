//! LastWriteTime while a file is open, following Windows (what smbtorture's
//! smb2.timestamps "delayed" tests check): the first write on a handle
//! updates the time [`UPDATE_DELAY`] later, further writes on that handle
//! only at close; a flush, an EOF/allocation change or any basic-info set
//! makes a pending update happen at once; a time set explicitly on a handle
//! (or -1, "freeze") stops that handle's automatic updates.
//!
//! The kernel moves mtime on every write, so while opens exist the time we
//! report is `held`, kept per file (all opens and directory listings must
//! agree). The last close writes it back to disk.

/// Delay of the first write's update (NT units: 2 s, as Windows and Samba).
pub const UPDATE_DELAY: u64 = 20_000_000;

/// File-wide state; lives in the broker next to the file's opens.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileWriteTime {
    /// LastWriteTime to report instead of the disk's mtime.
    held: Option<u64>,
    /// NT time at which a delayed update fires; it sets `held` to that time.
    pending: Option<u64>,
    /// Counts explicit sets, so that a close-time update owed to an older
    /// write yields to a later explicit time.
    explicit_gen: u64,
}

/// Per-handle state; lives in the server's Open (and travels to the
/// supervisor's broker with each write-time call).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenWriteTime {
    /// This handle has written (its first write started the delayed update).
    triggered: bool,
    /// A write after the delayed update fired: update at close, unless an
    /// explicit set (a different `explicit_gen`) happened since.
    update_on_close: Option<u64>,
    /// LastWriteTime was set explicitly through this handle.
    sticky: bool,
    /// -1 was set for LastWriteTime through this handle; -2 clears it.
    frozen: bool,
}

impl OpenWriteTime {
    /// This handle has written data.
    pub fn written(&self) -> bool {
        self.triggered
    }

    fn automatic(&self) -> bool {
        !self.sticky && !self.frozen
    }

    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        self.frozen = false;
    }
}

/// What a data change is, for [`FileWriteTime::modified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// WRITE: delayed update.
    Write,
    /// EOF or allocation set: immediate update.
    Resize,
}

impl FileWriteTime {
    fn settle(&mut self, now: u64) {
        if let Some(p) = self.pending.filter(|&p| now >= p) {
            self.held = Some(p);
            self.pending = None;
        }
    }

    /// The LastWriteTime to report, if it differs from the disk's mtime.
    pub fn reported(&mut self, now: u64) -> Option<u64> {
        self.settle(now);
        self.held
    }

    /// True if the next data change must first capture the disk's mtime.
    pub fn needs_hold(&self) -> bool {
        self.held.is_none()
    }

    /// A data change through handle `o`; `pre_mtime` is the disk mtime read
    /// just before it (when [`Self::needs_hold`] said so).
    pub fn modified(
        &mut self,
        o: &mut OpenWriteTime,
        change: Change,
        pre_mtime: Option<u64>,
        now: u64,
    ) {
        self.settle(now);
        if self.held.is_none() {
            self.held = pre_mtime;
        }
        if !o.automatic() {
            return;
        }
        match change {
            Change::Resize => self.update_now(o, now),
            Change::Write if !o.triggered => {
                o.triggered = true;
                if self.pending.is_none() {
                    self.pending = Some(now.saturating_add(UPDATE_DELAY));
                }
            }
            Change::Write => {
                if self.pending.is_none() {
                    o.update_on_close = Some(self.explicit_gen);
                }
            }
        }
    }

    fn update_now(&mut self, o: &mut OpenWriteTime, now: u64) {
        if self.held.is_some() {
            self.held = Some(now);
        }
        self.pending = None;
        o.update_on_close = None;
    }

    /// FLUSH or a basic-info set: a pending update happens now.
    pub fn flush(&mut self, o: &mut OpenWriteTime, now: u64) {
        self.settle(now);
        if self.pending.is_some() && o.automatic() {
            self.update_now(o, now);
        }
    }

    /// LastWriteTime set explicitly to `t` through handle `o`.
    pub fn set_explicit(&mut self, o: &mut OpenWriteTime, t: u64) {
        self.held = Some(t);
        self.pending = None;
        self.explicit_gen += 1;
        o.sticky = true;
        o.update_on_close = None;
    }

    /// Handle `o` closes: applies its owed update and returns the time to
    /// report (None: the disk's mtime).
    pub fn close(&mut self, o: &mut OpenWriteTime, now: u64) -> Option<u64> {
        self.settle(now);
        if o.automatic() {
            let owed = o.update_on_close.take() == Some(self.explicit_gen);
            if owed || (o.triggered && self.pending.is_some()) {
                self.update_now(o, now);
            }
        }
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 10_000_000;

    fn setup() -> (FileWriteTime, OpenWriteTime) {
        (FileWriteTime::default(), OpenWriteTime::default())
    }

    #[test]
    fn first_write_is_delayed_then_fires() {
        let (mut f, mut o) = setup();
        assert!(f.needs_hold());
        f.modified(&mut o, Change::Write, Some(100), 10 * S);
        assert_eq!(f.reported(11 * S), Some(100));
        assert_eq!(f.reported(13 * S), Some(12 * S));
        // Nothing written since: close keeps the fired time.
        assert_eq!(f.close(&mut o, 14 * S), Some(12 * S));
    }

    #[test]
    fn second_write_updates_at_close_only() {
        let (mut f, mut o) = setup();
        f.modified(&mut o, Change::Write, Some(100), 10 * S);
        assert_eq!(f.reported(13 * S), Some(12 * S));
        f.modified(&mut o, Change::Write, None, 13 * S);
        assert_eq!(f.reported(16 * S), Some(12 * S));
        assert_eq!(f.close(&mut o, 18 * S), Some(18 * S));
    }

    #[test]
    fn flush_and_resize_apply_pending_now() {
        let (mut f, mut o) = setup();
        f.modified(&mut o, Change::Write, Some(100), 10 * S);
        f.flush(&mut o, 11 * S);
        assert_eq!(f.reported(12 * S), Some(11 * S));
        assert_eq!(f.close(&mut o, 15 * S), Some(11 * S));

        let (mut f, mut o) = setup();
        f.modified(&mut o, Change::Write, Some(100), 10 * S);
        f.modified(&mut o, Change::Resize, None, 11 * S);
        assert_eq!(f.reported(20 * S), Some(11 * S));
        // No pending update: a flush changes nothing.
        f.flush(&mut o, 21 * S);
        assert_eq!(f.reported(22 * S), Some(11 * S));
    }

    #[test]
    fn explicit_time_is_sticky() {
        let (mut f, mut o1) = setup();
        let mut o2 = OpenWriteTime::default();
        f.modified(&mut o1, Change::Write, Some(100), 10 * S);
        f.flush(&mut o1, 11 * S);
        f.set_explicit(&mut o2, 99 * S);
        assert_eq!(f.close(&mut o2, 12 * S), Some(99 * S));
        assert_eq!(f.close(&mut o1, 13 * S), Some(99 * S));
        // Writes through the sticky handle do not move it.
        let (mut f, mut o) = setup();
        f.set_explicit(&mut o, 7);
        f.modified(&mut o, Change::Write, None, 10 * S);
        f.modified(&mut o, Change::Resize, None, 10 * S);
        assert_eq!(f.close(&mut o, 20 * S), Some(7));
    }

    #[test]
    fn explicit_set_cancels_owed_close_update() {
        let (mut f, mut o1) = setup();
        let mut o2 = OpenWriteTime::default();
        f.modified(&mut o1, Change::Write, Some(100), 10 * S);
        f.modified(&mut o1, Change::Write, None, 13 * S);
        f.set_explicit(&mut o2, 5);
        assert_eq!(f.close(&mut o1, 14 * S), Some(5));
    }

    #[test]
    fn frozen_handle_hides_its_writes() {
        let (mut f, mut o) = setup();
        o.freeze();
        f.modified(&mut o, Change::Write, Some(100), 10 * S);
        assert_eq!(f.reported(20 * S), Some(100));
        o.thaw();
        f.modified(&mut o, Change::Write, None, 21 * S);
        assert_eq!(f.reported(24 * S), Some(23 * S));
    }

    #[test]
    fn close_with_pending_update_applies_it() {
        let (mut f, mut o) = setup();
        f.modified(&mut o, Change::Write, Some(100), 10 * S);
        assert_eq!(f.close(&mut o, 11 * S), Some(11 * S));
    }
}
