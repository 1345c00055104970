//! Reads of a local UFS file into the process's pool of page-aligned buffers
//! ([`hoard_common::buffers`]): a cold fill reads a page (1MiB by default) at a time, and the
//! page store can write those buffers with O_DIRECT without copying them.

use std::ops::Range;

use bytes::Bytes;
use hoard_common::buffers::PooledBuffer;

/// Reads `range` of `file` into a pooled buffer; fewer bytes than asked when the file ends.
pub(crate) fn read_range(file: &std::fs::File, range: Range<u64>) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt as _;
    let len = usize::try_from(range.end - range.start).map_err(std::io::Error::other)?;
    let mut buffer = PooledBuffer::take(len)?;
    let slice = buffer.as_mut_slice();
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut slice[filled..], range.start + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(buffer.freeze(filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn reads_are_exact_aligned_and_reuse_buffers() {
        let mut file = tempfile::tempfile().expect("temp file");
        // Sizes in the 4MiB class, which no other test of this crate reads.
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).expect("write");
        let first = read_range(&file, 1000..3_001_000).expect("read");
        assert_eq!(&first[..], &data[1000..3_001_000]);
        assert_eq!(first.as_ptr().align_offset(4096), 0);
        let address = first.as_ptr();
        drop(first);
        // The same size class again: the buffer just returned, its old bytes overwritten.
        let second = read_range(&file, 0..2_500_000).expect("read");
        assert_eq!(&second[..], &data[..2_500_000]);
        assert_eq!(second.as_ptr(), address);
        // Past the end: only what the file has.
        let tail = read_range(&file, 3_000_000..4_000_000).expect("read");
        assert_eq!(&tail[..], &data[3_000_000..]);
    }
}
