//! Capability dropping for the calling thread (capset is per-thread).

use std::io;

pub use ::caps::{CapSet, Capability, CapsHashSet};

fn to_io(e: ::caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Keeps only `keep` in this thread's effective, permitted and inheritable
/// sets, clears its ambient set, and drops the rest from the bounding set
/// when allowed (needs CAP_SETPCAP; skipped silently otherwise).
pub fn drop_all_except(keep: &[Capability]) -> io::Result<()> {
    let keep_set: CapsHashSet = keep.iter().copied().collect();
    // Bounding first: dropping from it needs CAP_SETPCAP still in effect.
    if ::caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in ::caps::all() {
            if !keep_set.contains(&cap)
                && ::caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
            {
                ::caps::drop(None, CapSet::Bounding, cap).map_err(to_io)?;
            }
        }
    }
    ::caps::clear(None, CapSet::Ambient).map_err(to_io)?;
    let permitted = ::caps::read(None, CapSet::Permitted).map_err(to_io)?;
    let kept: CapsHashSet = keep_set.intersection(&permitted).copied().collect();
    ::caps::set(None, CapSet::Inheritable, &kept).map_err(to_io)?;
    ::caps::set(None, CapSet::Effective, &kept).map_err(to_io)?;
    ::caps::set(None, CapSet::Permitted, &kept).map_err(to_io)?;
    Ok(())
}

/// This thread's capabilities in `set` (for logging what a daemon kept).
pub fn current(set: CapSet) -> io::Result<CapsHashSet> {
    ::caps::read(None, set).map_err(to_io)
}

/// Drops everything but `keep` and then checks that exactly the kept
/// capabilities that were permitted remain effective and permitted; a daemon
/// calls this on its main thread before starting any other thread, so every
/// thread it creates afterwards inherits the reduced sets.
pub fn restrict_to(keep: &[Capability]) -> io::Result<CapsHashSet> {
    let before = current(CapSet::Permitted)?;
    drop_all_except(keep)?;
    let eff = current(CapSet::Effective)?;
    let perm = current(CapSet::Permitted)?;
    let want: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| before.contains(c))
        .collect();
    if eff != want || perm != want {
        return Err(io::Error::other(format!(
            "capabilities after dropping: effective {eff:?}, permitted {perm:?}; wanted {want:?}"
        )));
    }
    Ok(eff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_a_thread_only() {
        let before = ::caps::read(None, CapSet::Effective).unwrap();
        if !before.contains(&Capability::CAP_DAC_OVERRIDE) {
            eprintln!("skipped: needs CAP_DAC_OVERRIDE");
            return;
        }
        std::thread::spawn(|| {
            drop_all_except(&[Capability::CAP_DAC_OVERRIDE]).unwrap();
            let eff = ::caps::read(None, CapSet::Effective).unwrap();
            let perm = ::caps::read(None, CapSet::Permitted).unwrap();
            assert_eq!(eff.len(), 1);
            assert!(eff.contains(&Capability::CAP_DAC_OVERRIDE));
            assert_eq!(perm, eff);
            assert!(!::caps::has_cap(None, CapSet::Bounding, Capability::CAP_SYS_ADMIN).unwrap());
        })
        .join()
        .unwrap();
        assert_eq!(::caps::read(None, CapSet::Effective).unwrap(), before);
    }
}
