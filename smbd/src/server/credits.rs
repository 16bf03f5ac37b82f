//! Credit accounting (MS-SMB2 3.3.1.2): the window of message ids a client may use.

use std::collections::VecDeque;

/// Most credits a client may hold at once by default ("smb2 max credits").
pub const MAX_CREDITS: u64 = 8192;

/// The server's view of which message ids are still usable on one connection.
#[derive(Debug)]
pub struct CreditWindow {
    /// Lowest message id not yet used.
    low: u64,
    /// used[i] tells whether id `low + i` has been consumed; ids at or beyond
    /// `low + used.len()` have not been granted.
    used: VecDeque<bool>,
    /// Most credits outstanding at once.
    max: u64,
}

impl Default for CreditWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl CreditWindow {
    /// A new connection may send message id 0 only.
    pub fn new() -> Self {
        Self::with_max(MAX_CREDITS)
    }

    /// A new window that never lets the client hold more than `max` credits.
    pub fn with_max(max: u64) -> Self {
        let mut used = VecDeque::new();
        used.push_back(false);
        CreditWindow {
            low: 0,
            used,
            max: max.max(1),
        }
    }

    /// Credits granted and not yet used.
    pub fn outstanding(&self) -> u64 {
        self.used.iter().filter(|u| !**u).count() as u64
    }

    /// Consumes ids `mid .. mid+charge`. False if any of them is outside the
    /// window or already used (the connection must then be dropped).
    pub fn consume(&mut self, mid: u64, charge: u16) -> bool {
        let charge = u64::from(charge.max(1));
        if mid < self.low {
            return false;
        }
        let start = mid - self.low;
        let Some(end) = start.checked_add(charge) else {
            return false;
        };
        if end > self.used.len() as u64 {
            return false;
        }
        let (s, e) = (start as usize, end as usize);
        if self.used.range(s..e).any(|u| *u) {
            return false;
        }
        for i in s..e {
            self.used[i] = true;
        }
        while self.used.front() == Some(&true) {
            self.used.pop_front();
            self.low += 1;
        }
        true
    }

    /// Grants up to `want` more credits, keeping the total outstanding within
    /// the window's maximum. Returns how many were granted.
    pub fn grant(&mut self, want: u16) -> u16 {
        let room = self.max.saturating_sub(self.outstanding());
        let n = u64::from(want).min(room);
        for _ in 0..n {
            self.used.push_back(false);
        }
        n as u16
    }
}

/// A credit window in transit (a connection moving to another worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowParts {
    pub low: u64,
    pub used: Vec<bool>,
    pub max: u64,
}

impl CreditWindow {
    pub fn to_parts(&self) -> WindowParts {
        WindowParts {
            low: self.low,
            used: self.used.iter().copied().collect(),
            max: self.max,
        }
    }

    /// The window `to_parts` described; None if it is not one a connection
    /// could have (empty, or more ids granted than the maximum allows).
    pub fn from_parts(p: WindowParts) -> Option<CreditWindow> {
        let max = p.max.max(1);
        let granted = p.used.iter().filter(|u| !**u).count() as u64;
        if p.used.is_empty() || granted > max || p.used.len() > u16::MAX as usize {
            return None;
        }
        Some(CreditWindow {
            low: p.low,
            used: p.used.into(),
            max,
        })
    }
}

/// Credits a request of `payload` bytes must be charged with (MS-SMB2 3.1.5.2).
pub fn required_charge(payload: u64) -> u16 {
    if payload == 0 {
        1
    } else {
        (payload.saturating_sub(1) / 65536 + 1).min(u64::from(u16::MAX)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_message_only_id_zero() {
        let mut w = CreditWindow::new();
        assert!(!w.consume(1, 1));
        assert!(w.consume(0, 1));
        assert!(!w.consume(0, 1), "replayed id");
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn out_of_order_and_multi_credit() {
        let mut w = CreditWindow::new();
        assert!(w.consume(0, 1));
        assert_eq!(w.grant(10), 10);
        assert!(w.consume(5, 2)); // 5,6
        assert!(!w.consume(6, 1));
        assert!(w.consume(1, 4)); // 1..4
        assert!(w.consume(7, 4)); // 7..10
        assert!(!w.consume(11, 1), "not granted");
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn grant_capped() {
        let mut w = CreditWindow::new();
        assert_eq!(w.grant(u16::MAX), (MAX_CREDITS - 1) as u16);
        assert_eq!(w.grant(5), 0);
    }

    #[test]
    fn configured_maximum() {
        let mut w = CreditWindow::with_max(16);
        assert!(w.consume(0, 1));
        assert_eq!(w.grant(100), 16);
        assert_eq!(w.grant(1), 0, "already at the limit");
        assert!(w.consume(1, 4));
        assert_eq!(w.grant(100), 4, "used credits can be granted again");
    }

    #[test]
    fn parts_round_trip() {
        let mut w = CreditWindow::with_max(32);
        assert!(w.consume(0, 1));
        w.grant(8);
        assert!(w.consume(3, 1));
        let mut back = CreditWindow::from_parts(w.to_parts()).unwrap();
        assert!(!back.consume(3, 1), "used id stays used");
        assert!(back.consume(1, 2));
        assert!(!back.consume(9, 1), "not granted");
        let bad = WindowParts {
            low: 0,
            used: vec![false; 40],
            max: 32,
        };
        assert!(CreditWindow::from_parts(bad).is_none());
        let empty = WindowParts {
            low: 0,
            used: Vec::new(),
            max: 32,
        };
        assert!(CreditWindow::from_parts(empty).is_none());
    }

    #[test]
    fn charge() {
        assert_eq!(required_charge(0), 1);
        assert_eq!(required_charge(65536), 1);
        assert_eq!(required_charge(65537), 2);
        assert_eq!(required_charge(8 << 20), 128);
    }
}
