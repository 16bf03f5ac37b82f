//! File-system information classes for QUERY_INFO (MS-FSCC 2.5,
//! MS-SMB2 3.3.5.20.2). Pure encoders: no I/O, never panics.

use bytes::BufMut;

use crate::wire::{utf16le, NtStatus};

/// FsInformationClass values (MS-FSCC 2.5).
pub mod class {
    pub const VOLUME: u8 = 1;
    pub const LABEL: u8 = 2;
    pub const SIZE: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const ATTRIBUTE: u8 = 5;
    pub const CONTROL: u8 = 6;
    pub const FULL_SIZE: u8 = 7;
    pub const OBJECT_ID: u8 = 8;
    pub const DRIVER_PATH: u8 = 9;
    pub const VOLUME_FLAGS: u8 = 10;
    pub const SECTOR_SIZE: u8 = 11;
}

/// FILE_DEVICE_DISK (MS-FSCC 2.5.10).
pub const FILE_DEVICE_DISK: u32 = 0x0000_0007;
/// FILE_DEVICE_IS_MOUNTED: what a Windows server reports for a shared NTFS
/// volume; the client-side redirector adds FILE_REMOTE_DEVICE itself.
pub const FILE_DEVICE_IS_MOUNTED: u32 = 0x0000_0020;

/// FileSystemAttributes bits (MS-FSCC 2.5.1).
pub mod fs_attr {
    pub const CASE_SENSITIVE_SEARCH: u32 = 0x0000_0001;
    pub const CASE_PRESERVED_NAMES: u32 = 0x0000_0002;
    pub const UNICODE_ON_DISK: u32 = 0x0000_0004;
    pub const PERSISTENT_ACLS: u32 = 0x0000_0008;
    pub const SUPPORTS_SPARSE_FILES: u32 = 0x0000_0040;
    pub const SUPPORTS_OBJECT_IDS: u32 = 0x0001_0000;
    pub const NAMED_STREAMS: u32 = 0x0004_0000;
}

/// What we advertise, and only what we honour:
/// - CASE_SENSITIVE_SEARCH: the backing Linux file system is case-sensitive
///   and NTFS advertises it too (clients do not rely on it for lookups);
/// - CASE_PRESERVED_NAMES: names are stored as given;
/// - UNICODE_ON_DISK: names are stored as UTF-8 on disk;
/// - PERSISTENT_ACLS: security descriptors map to and from the POSIX mode.
///
/// Not advertised: sparse files, named streams, object ids, reparse points,
/// compression, encryption, EAs — none of them is implemented yet.
pub const FS_ATTRIBUTES: u32 = fs_attr::CASE_SENSITIVE_SEARCH
    | fs_attr::CASE_PRESERVED_NAMES
    | fs_attr::UNICODE_ON_DISK
    | fs_attr::PERSISTENT_ACLS;

/// Bytes per sector reported everywhere.
pub const BYTES_PER_SECTOR: u32 = 512;

/// What QUERY_INFO needs to know about the volume behind a share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeView {
    pub label: String,
    pub serial: u32,
    /// NT time.
    pub created: u64,
    /// Allocation unit (cluster) size in bytes, e.g. statvfs f_frsize.
    pub block_size: u32,
    pub total_units: u64,
    /// Free units for root (f_bfree).
    pub free_units: u64,
    /// Free units for the caller (f_bavail).
    pub avail_units: u64,
    /// "NTFS".
    pub fs_name: String,
    pub max_name_len: u32,
    pub object_id: [u8; 16],
}

impl VolumeView {
    /// (SectorsPerAllocationUnit, BytesPerSector).
    fn geometry(&self) -> (u32, u32) {
        if self.block_size >= BYTES_PER_SECTOR {
            (self.block_size / BYTES_PER_SECTOR, BYTES_PER_SECTOR)
        } else {
            (1, self.block_size.max(1))
        }
    }
}

fn fixed_len(class: u8) -> Option<usize> {
    Some(match class {
        // The fixed parts Windows enforces are a little larger than the
        // structures' fixed fields (checked by smbtorture qfs_buffercheck).
        class::VOLUME => 24,
        class::SIZE => 24,
        class::DEVICE => 8,
        class::ATTRIBUTE => 16,
        class::CONTROL => 48,
        class::FULL_SIZE => 32,
        class::OBJECT_ID => 64,
        class::SECTOR_SIZE => 28,
        _ => return None,
    })
}

/// Encodes a file-system information class.
///
/// Returns the bytes and whether they were truncated (answer
/// STATUS_BUFFER_OVERFLOW). INFO_LENGTH_MISMATCH when `max_len` cannot hold
/// the fixed part; NOT_SUPPORTED for documented classes we do not implement
/// (label, control/quota, driver path, volume flags); INVALID_INFO_CLASS
/// otherwise.
pub fn query_fs_info(
    class: u8,
    v: &VolumeView,
    max_len: usize,
) -> Result<(Vec<u8>, bool), NtStatus> {
    let Some(fixed) = fixed_len(class) else {
        return Err(match class {
            class::LABEL | class::DRIVER_PATH | class::VOLUME_FLAGS => NtStatus::NOT_SUPPORTED,
            _ => NtStatus::INVALID_INFO_CLASS,
        });
    };
    if max_len < fixed {
        return Err(NtStatus::INFO_LENGTH_MISMATCH);
    }
    let (spu, bps) = v.geometry();
    let mut out: Vec<u8> = Vec::with_capacity(fixed + 64);
    match class {
        class::VOLUME => {
            let label = utf16le(&v.label);
            out.put_u64_le(v.created);
            out.put_u32_le(v.serial);
            out.put_u32_le(u32::try_from(label.len()).unwrap_or(u32::MAX));
            out.put_u8(0); // SupportsObjects: no object-id support.
            out.put_u8(0);
            out.extend_from_slice(&label);
        }
        class::SIZE => {
            out.put_u64_le(v.total_units);
            out.put_u64_le(v.avail_units);
            out.put_u32_le(spu);
            out.put_u32_le(bps);
        }
        class::DEVICE => {
            out.put_u32_le(FILE_DEVICE_DISK);
            out.put_u32_le(FILE_DEVICE_IS_MOUNTED);
        }
        class::ATTRIBUTE => {
            let name = utf16le(&v.fs_name);
            out.put_u32_le(FS_ATTRIBUTES);
            out.put_u32_le(v.max_name_len);
            out.put_u32_le(u32::try_from(name.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(&name);
        }
        class::FULL_SIZE => {
            out.put_u64_le(v.total_units);
            out.put_u64_le(v.avail_units);
            out.put_u64_le(v.free_units);
            out.put_u32_le(spu);
            out.put_u32_le(bps);
        }
        class::CONTROL => {
            // FileFsControlInformation: no quota filtering or limits.
            out.put_u64_le(0); // FreeSpaceStartFiltering
            out.put_u64_le(0); // FreeSpaceThreshold
            out.put_u64_le(0); // FreeSpaceStopFiltering
            out.put_u64_le(u64::MAX); // DefaultQuotaThreshold: none
            out.put_u64_le(u64::MAX); // DefaultQuotaLimit: none
            out.put_u32_le(0); // FileSystemControlFlags
            out.put_u32_le(0);
        }
        class::OBJECT_ID => {
            out.extend_from_slice(&v.object_id);
            out.put_slice(&[0u8; 48]);
        }
        class::SECTOR_SIZE => {
            // LogicalBytesPerSector, PhysicalBytesPerSectorForAtomicity,
            // PhysicalBytesPerSectorForPerformance,
            // FileSystemEffectivePhysicalBytesPerSectorForAtomicity.
            for _ in 0..4 {
                out.put_u32_le(bps);
            }
            // SSINFO_FLAGS_ALIGNED_DEVICE | SSINFO_FLAGS_PARTITION_ALIGNED_ON_DEVICE
            out.put_u32_le(0x0000_0003);
            out.put_u32_le(0); // ByteOffsetForSectorAlignment
            out.put_u32_le(0); // ByteOffsetForPartitionAlignment
        }
        _ => return Err(NtStatus::INVALID_INFO_CLASS),
    }
    if out.len() > max_len {
        out.truncate(max_len);
        Ok((out, true))
    } else {
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> VolumeView {
        VolumeView {
            label: "share".into(),
            serial: 0xDEAD_BEEF,
            created: 42,
            block_size: 4096,
            total_units: 1000,
            free_units: 600,
            avail_units: 500,
            fs_name: "NTFS".into(),
            max_name_len: 255,
            object_id: [7; 16],
        }
    }
    fn u32at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn volume() {
        let (b, ov) = query_fs_info(class::VOLUME, &vol(), 100).unwrap();
        assert!(!ov);
        assert_eq!(u64at(&b, 0), 42);
        assert_eq!(u32at(&b, 8), 0xDEAD_BEEF);
        assert_eq!(u32at(&b, 12), 10);
        assert_eq!(&b[18..], &utf16le("share")[..]);
        let (b, ov) = query_fs_info(class::VOLUME, &vol(), 24).unwrap();
        assert!(ov);
        assert_eq!(b.len(), 24);
        assert_eq!(
            query_fs_info(class::VOLUME, &vol(), 23),
            Err(NtStatus::INFO_LENGTH_MISMATCH)
        );
    }

    #[test]
    fn sizes() {
        let (b, _) = query_fs_info(class::SIZE, &vol(), 24).unwrap();
        assert_eq!(u64at(&b, 0), 1000);
        assert_eq!(u64at(&b, 8), 500);
        assert_eq!(u32at(&b, 16), 8);
        assert_eq!(u32at(&b, 20), 512);
        let (b, _) = query_fs_info(class::FULL_SIZE, &vol(), 32).unwrap();
        assert_eq!(u64at(&b, 8), 500);
        assert_eq!(u64at(&b, 16), 600);
        assert_eq!(u32at(&b, 24), 8);
        let mut v = vol();
        v.block_size = 0;
        let (b, _) = query_fs_info(class::SIZE, &v, 24).unwrap();
        assert_eq!(u32at(&b, 16), 1);
        assert_eq!(u32at(&b, 20), 1);
    }

    #[test]
    fn device_attribute_objid_sector() {
        let (b, _) = query_fs_info(class::DEVICE, &vol(), 8).unwrap();
        assert_eq!(u32at(&b, 0), 7);
        assert_eq!(u32at(&b, 4), 0x20);
        let (b, ov) = query_fs_info(class::ATTRIBUTE, &vol(), 100).unwrap();
        assert!(!ov);
        assert_eq!(u32at(&b, 0), FS_ATTRIBUTES);
        assert_eq!(u32at(&b, 4), 255);
        assert_eq!(u32at(&b, 8), 8);
        assert_eq!(&b[12..], &utf16le("NTFS")[..]);
        let (b, ov) = query_fs_info(class::ATTRIBUTE, &vol(), 16).unwrap();
        assert!(ov);
        assert_eq!(b.len(), 16);
        let (b, _) = query_fs_info(class::OBJECT_ID, &vol(), 64).unwrap();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..16], &[7; 16]);
        let (b, _) = query_fs_info(class::SECTOR_SIZE, &vol(), 28).unwrap();
        assert_eq!(b.len(), 28);
        assert_eq!(u32at(&b, 0), 512);
    }

    #[test]
    fn errors() {
        assert_eq!(
            query_fs_info(class::LABEL, &vol(), 100),
            Err(NtStatus::NOT_SUPPORTED)
        );
        assert_eq!(
            query_fs_info(class::CONTROL, &vol(), 100).map(|(b, _)| b.len()),
            Ok(48)
        );
        assert_eq!(
            query_fs_info(99, &vol(), 100),
            Err(NtStatus::INVALID_INFO_CLASS)
        );
        for c in 0..=255u8 {
            for l in [0, 1, 12, 18, 1000] {
                let _ = query_fs_info(c, &vol(), l);
            }
        }
    }
}
