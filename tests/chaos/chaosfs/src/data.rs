//! The contents of one file: what an fsync made durable, and the writes since.
//!
//! Reads see the current contents (durable bytes overlaid with the pages written since the
//! last fsync). `sync` makes the current contents durable; `cut` throws away everything since
//! the last `sync`, as a power cut does to a page cache.

use std::collections::BTreeMap;

/// Page size of the write cache.
pub const PAGE: u64 = 4096;

/// One file's data.
#[derive(Debug, Default)]
pub struct FileData {
    /// The contents as of the last fsync.
    durable: Vec<u8>,
    /// Bytes of `durable` at or past this offset are gone from the current contents: a
    /// truncate not yet made durable.
    keep: Option<u64>,
    /// Pages written since the last fsync, by page number, each `PAGE` bytes.
    dirty: BTreeMap<u64, Vec<u8>>,
    /// The current size.
    size: u64,
}

impl FileData {
    /// The current size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written since the last fsync, in whole pages.
    pub fn unsynced_bytes(&self) -> u64 {
        self.dirty.len() as u64 * PAGE
    }

    /// Whether anything changed since the last fsync.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.keep.is_some() || self.size != self.durable.len() as u64
    }

    /// The durable size.
    pub fn durable_size(&self) -> u64 {
        self.durable.len() as u64
    }

    /// The current contents of a page that has not been written since the last fsync.
    fn base_page(&self, page: u64) -> Vec<u8> {
        let mut out = vec![0u8; PAGE as usize];
        let start = page * PAGE;
        let visible = (self.durable.len() as u64)
            .min(self.keep.unwrap_or(u64::MAX))
            .min(self.size);
        if start < visible {
            let end = (start + PAGE).min(visible);
            out[..(end - start) as usize]
                .copy_from_slice(&self.durable[start as usize..end as usize]);
        }
        out
    }

    /// Reads up to `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        if offset >= self.size {
            return Vec::new();
        }
        let end = (offset + len).min(self.size);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            match self.dirty.get(&page) {
                Some(bytes) => out.extend_from_slice(&bytes[in_page..in_page + take]),
                None => out.extend_from_slice(&self.base_page(page)[in_page..in_page + take]),
            }
            at += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file if needed.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let take = ((PAGE as usize) - in_page).min(rest.len());
            if !self.dirty.contains_key(&page) {
                let base = self.base_page(page);
                self.dirty.insert(page, base);
            }
            if let Some(bytes) = self.dirty.get_mut(&page) {
                bytes[in_page..in_page + take].copy_from_slice(&rest[..take]);
            }
            rest = &rest[take..];
            at += take as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// Sets the size: shrinking drops the bytes past it, growing reads as zeros.
    pub fn truncate(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE);
            self.dirty.retain(|&page, _| page < first_gone);
            // The page holding the new end keeps only the bytes before it.
            if !size.is_multiple_of(PAGE) {
                let page = size / PAGE;
                if !self.dirty.contains_key(&page) {
                    let base = self.base_page(page);
                    self.dirty.insert(page, base);
                }
                if let Some(bytes) = self.dirty.get_mut(&page) {
                    bytes[(size % PAGE) as usize..].fill(0);
                }
            }
            self.keep = Some(self.keep.unwrap_or(u64::MAX).min(size));
        }
        self.size = size;
    }

    /// Makes the current contents durable; returns the bytes that became durable.
    pub fn sync(&mut self) -> u64 {
        let written = self.unsynced_bytes();
        if let Some(keep) = self.keep.take() {
            self.durable.truncate(keep as usize);
        }
        self.durable.resize(self.size as usize, 0);
        for (page, bytes) in std::mem::take(&mut self.dirty) {
            let start = page * PAGE;
            if start >= self.size {
                continue;
            }
            let end = (start + PAGE).min(self.size);
            self.durable[start as usize..end as usize]
                .copy_from_slice(&bytes[..(end - start) as usize]);
        }
        written
    }

    /// Forgets everything since the last fsync; returns the bytes lost.
    pub fn cut(&mut self) -> u64 {
        let lost = self.unsynced_bytes();
        self.dirty.clear();
        self.keep = None;
        self.size = self.durable.len() as u64;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(f: &FileData) -> Vec<u8> {
        f.read(0, u64::MAX / 2)
    }

    #[test]
    fn writes_are_visible_at_once_and_lost_at_a_cut_unless_synced() {
        let mut f = FileData::default();
        f.write(0, b"hello");
        assert_eq!(contents(&f), b"hello");
        assert_eq!(f.sync(), PAGE);
        f.write(5, b" world");
        f.write(2, b"L");
        assert_eq!(contents(&f), b"heLlo world");
        assert!(f.cut() > 0);
        assert_eq!(contents(&f), b"hello");
        assert!(!f.is_dirty());
    }

    #[test]
    fn writes_across_pages_and_holes_read_back() {
        let mut f = FileData::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        f.write(3000, &data);
        let all = contents(&f);
        assert_eq!(all.len(), 13_000);
        assert!(all[..3000].iter().all(|&b| b == 0));
        assert_eq!(&all[3000..], &data[..]);
        f.sync();
        assert_eq!(contents(&f), all);
        assert_eq!(f.read(12_990, 100), &data[9990..]);
        assert!(f.read(13_000, 10).is_empty());
    }

    #[test]
    fn a_truncate_is_undone_by_a_cut_and_kept_by_a_sync() {
        let mut f = FileData::default();
        f.write(0, &[7u8; 9000]);
        f.sync();
        f.truncate(100);
        assert_eq!(contents(&f), vec![7u8; 100]);
        // Growing again reads zeros past the cut-off point, not the old bytes.
        f.truncate(5000);
        let all = contents(&f);
        assert_eq!(&all[..100], &[7u8; 100][..]);
        assert!(all[100..].iter().all(|&b| b == 0));
        f.cut();
        assert_eq!(contents(&f), vec![7u8; 9000]);
        f.truncate(100);
        f.write(6000, b"x");
        f.sync();
        let all = contents(&f);
        assert_eq!(all.len(), 6001);
        assert!(all[100..6000].iter().all(|&b| b == 0));
        assert_eq!(all[6000], b'x');
        f.cut();
        assert_eq!(contents(&f), all);
    }

    #[test]
    fn a_file_never_synced_is_empty_after_a_cut() {
        let mut f = FileData::default();
        f.write(0, b"never synced");
        f.cut();
        assert_eq!(f.size(), 0);
        assert!(contents(&f).is_empty());
    }
}
