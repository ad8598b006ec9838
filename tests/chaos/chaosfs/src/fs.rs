//! The FUSE side: an in-memory tree of directories, files and symbolic links.
//!
//! Names (create, rename, link, unlink) are durable at once, as on a journalling filesystem and
//! as LazyFS models it; file data is durable only once fsynced (see [`FileData`]). Every open
//! file is in direct-I/O mode and no attribute is cached by the kernel, so after a [`State::cut`]
//! the next process sees exactly what survived.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::data::{FileData, PAGE};

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;
const FALLOC_FL_KEEP_SIZE: i32 = 1;
const MAX_NAME: usize = 255;

enum Kind {
    File(FileData),
    Dir {
        entries: BTreeMap<OsString, u64>,
        parent: u64,
    },
    Symlink(PathBuf),
    /// A named pipe or a socket: the kernel gives them their meaning, the tree only names them.
    Special(FileType),
}

struct Inode {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    open: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Inode {
    fn new(kind: Kind, perm: u16, req: &Request) -> Inode {
        let now = SystemTime::now();
        Inode {
            kind,
            perm,
            uid: req.uid(),
            gid: req.gid(),
            nlink: 1,
            open: 0,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn file_type(&self) -> FileType {
        match self.kind {
            Kind::File(_) => FileType::RegularFile,
            Kind::Dir { .. } => FileType::Directory,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::Special(kind) => kind,
        }
    }

    fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(data) => data.size(),
            Kind::Dir { entries, .. } => entries.len() as u64,
            Kind::Symlink(target) => target.as_os_str().len() as u64,
            Kind::Special(_) => 0,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = self.size();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.file_type(),
            perm: self.perm,
            nlink: match self.kind {
                Kind::Dir { .. } => 2,
                _ => self.nlink,
            },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }
}

/// What the filesystem holds, shared with the control socket.
pub struct State {
    nodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Size of the filesystem in bytes; writes past it fail with `ENOSPC`.
    pub capacity: u64,
    /// Bytes of file data (current sizes).
    used: u64,
    fsyncs: u64,
    cuts: u64,
    lost_bytes: u64,
}

impl State {
    /// An empty filesystem of `capacity` bytes, its root owned by `uid`:`gid`.
    pub fn new(capacity: u64, uid: u32, gid: u32) -> State {
        let now = SystemTime::now();
        let root = Inode {
            kind: Kind::Dir {
                entries: BTreeMap::new(),
                parent: ROOT,
            },
            perm: 0o755,
            uid,
            gid,
            nlink: 2,
            open: 0,
            atime: now,
            mtime: now,
            ctime: now,
        };
        State {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            capacity,
            used: 0,
            fsyncs: 0,
            cuts: 0,
            lost_bytes: 0,
        }
    }

    /// The power cut: every file goes back to what its last fsync made durable. Returns the
    /// bytes dropped and the number of files that lost something.
    pub fn cut(&mut self) -> (u64, u64) {
        let mut lost = 0;
        let mut files = 0;
        for node in self.nodes.values_mut() {
            if let Kind::File(data) = &mut node.kind
                && data.is_dirty()
            {
                lost += data.cut();
                files += 1;
            }
        }
        self.recount();
        self.cuts += 1;
        self.lost_bytes += lost;
        (lost, files)
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// A one-line summary for the control socket.
    pub fn stats(&self) -> String {
        let mut unsynced = 0;
        let mut durable = 0;
        for node in self.nodes.values() {
            if let Kind::File(data) = &node.kind {
                unsynced += data.unsynced_bytes();
                durable += data.durable_size();
            }
        }
        format!(
            "inodes={} used={} durable={} unsynced={} capacity={} fsyncs={} cuts={} lost={}",
            self.nodes.len(),
            self.used,
            durable,
            unsynced,
            self.capacity,
            self.fsyncs,
            self.cuts,
            self.lost_bytes
        )
    }

    fn recount(&mut self) {
        self.used = self
            .nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File(data) => data.size(),
                _ => 0,
            })
            .sum();
    }

    fn node(&self, ino: u64) -> Result<&Inode, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.node(dir)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.node_mut(dir)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn touch_dir(&mut self, dir: u64) {
        if let Some(node) = self.nodes.get_mut(&dir) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
    }

    /// Adds a new inode under `name` in `parent`.
    fn insert(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<u64, Errno> {
        if name.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, inode);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    /// Adds a new inode under `name` in `parent` and returns its attributes.
    fn create(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<FileAttr, Errno> {
        let ino = self.insert(parent, name, inode)?;
        Ok(self.node(ino)?.attr(ino))
    }

    /// Drops one link to `ino`; the inode goes once it has no links and no open handles.
    fn unlinked(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlink = node.nlink.saturating_sub(1);
            node.ctime = SystemTime::now();
        }
        self.collect(ino);
    }

    fn collect(&mut self, ino: u64) {
        let gone = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.nlink == 0 && n.open == 0);
        if gone
            && let Some(node) = self.nodes.remove(&ino)
            && let Kind::File(data) = &node.kind
        {
            self.used -= data.size();
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match &mut self.node_mut(ino)?.kind {
            Kind::File(data) => Ok(data),
            Kind::Dir { .. } => Err(Errno::EISDIR),
            Kind::Symlink(_) | Kind::Special(_) => Err(Errno::EINVAL),
        }
    }

    /// Sets a file's size, within the capacity.
    fn resize(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let old = self.file_mut(ino)?.size();
        if size > old && self.used + (size - old) > self.capacity {
            return Err(Errno::ENOSPC);
        }
        self.file_mut(ino)?.truncate(size);
        self.used = self.used - old + size;
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let file = self.file_mut(ino)?;
        let old = file.size();
        let end = offset + data.len() as u64;
        if end > old && self.used + (end - old) > self.capacity {
            return Err(Errno::ENOSPC);
        }
        let file = self.file_mut(ino)?;
        file.write(offset, data);
        let new = file.size();
        self.used = self.used - old + new;
        let node = self.node_mut(ino)?;
        let now = SystemTime::now();
        node.mtime = now;
        node.ctime = now;
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        if newname.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        let ino = self.child(parent, name)?;
        self.entries(newparent)?;
        let is_dir = matches!(self.node(ino)?.kind, Kind::Dir { .. });
        if is_dir && self.is_within(newparent, ino) {
            return Err(Errno::EINVAL);
        }
        if let Ok(target) = self.child(newparent, newname) {
            if target == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&self.node(target)?.kind, is_dir) {
                (Kind::Dir { entries, .. }, true) if !entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY);
                }
                (Kind::Dir { .. }, false) => return Err(Errno::EISDIR),
                (Kind::Dir { .. }, true) => {}
                (_, true) => return Err(Errno::ENOTDIR),
                (_, false) => {}
            }
            self.entries_mut(newparent)?.remove(newname);
            self.unlinked(target);
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(newparent)?.insert(newname.to_owned(), ino);
        if let Kind::Dir { parent: up, .. } = &mut self.node_mut(ino)?.kind {
            *up = newparent;
        }
        self.node_mut(ino)?.ctime = SystemTime::now();
        self.touch_dir(parent);
        self.touch_dir(newparent);
        Ok(())
    }

    /// Whether directory `dir` is `ancestor` or below it.
    fn is_within(&self, dir: u64, ancestor: u64) -> bool {
        let mut at = dir;
        loop {
            if at == ancestor {
                return true;
            }
            match self.nodes.get(&at).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if *parent != at => at = *parent,
                _ => return false,
            }
        }
    }
}

/// The filesystem served over FUSE.
pub struct ChaosFs {
    state: Arc<Mutex<State>>,
}

impl ChaosFs {
    /// Serves `state`.
    pub fn new(state: Arc<Mutex<State>>) -> ChaosFs {
        ChaosFs { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Locks the state, also after a panic in another thread (the tree stays usable).
pub fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn perm_of(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

fn entry_reply(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty_reply(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for ChaosFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.lock();
        entry_reply(
            reply,
            st.child(parent.0, name)
                .and_then(|ino| Ok(st.node(ino)?.attr(ino))),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().node(ino.0) {
            Ok(node) => reply.attr(&TTL, &node.attr(ino.0)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock();
        let result = (|| {
            if let Some(size) = size {
                st.resize(ino.0, size)?;
            }
            let node = st.node_mut(ino.0)?;
            let now = SystemTime::now();
            let at = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => now,
            };
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(t) = atime {
                node.atime = at(t);
            }
            if let Some(t) = mtime {
                node.mtime = at(t);
            }
            if size.is_some() && mtime.is_none() {
                node.mtime = now;
            }
            node.ctime = now;
            Ok(node.attr(ino.0))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.lock().node(ino.0).map(|n| &n.kind) {
            Ok(Kind::Symlink(target)) => reply.data(target.as_os_str().as_encoded_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Files, named pipes and sockets (a mail queue has all three); no devices.
        let kind = match mode & 0o170000 {
            0o100000 => Kind::File(FileData::default()),
            0o010000 => Kind::Special(FileType::NamedPipe),
            0o140000 => Kind::Special(FileType::Socket),
            _ => return reply.error(Errno::EPERM),
        };
        let mut st = self.lock();
        let inode = Inode::new(kind, perm_of(mode, umask), req);
        entry_reply(reply, st.create(parent.0, name, inode));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let kind = Kind::Dir {
            entries: BTreeMap::new(),
            parent: parent.0,
        };
        let inode = Inode::new(kind, perm_of(mode, umask), req);
        entry_reply(reply, st.create(parent.0, name, inode));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let result = (|| {
            let ino = st.child(parent.0, name)?;
            if matches!(st.node(ino)?.kind, Kind::Dir { .. }) {
                return Err(Errno::EISDIR);
            }
            st.entries_mut(parent.0)?.remove(name);
            st.touch_dir(parent.0);
            st.unlinked(ino);
            Ok(())
        })();
        empty_reply(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let result = (|| {
            let ino = st.child(parent.0, name)?;
            match &st.node(ino)?.kind {
                Kind::Dir { entries, .. } if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                Kind::Dir { .. } => {}
                _ => return Err(Errno::ENOTDIR),
            }
            st.entries_mut(parent.0)?.remove(name);
            st.touch_dir(parent.0);
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.nlink = 0;
            }
            st.collect(ino);
            Ok(())
        })();
        empty_reply(reply, result);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let inode = Inode::new(Kind::Symlink(target.to_path_buf()), 0o777, req);
        entry_reply(reply, st.create(parent.0, link_name, inode));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .lock()
            .rename(parent.0, name, newparent.0, newname, flags);
        empty_reply(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let result = (|| {
            if matches!(st.node(ino.0)?.kind, Kind::Dir { .. }) {
                return Err(Errno::EPERM);
            }
            if newname.len() > MAX_NAME {
                return Err(Errno::ENAMETOOLONG);
            }
            if st.entries(newparent.0)?.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            st.entries_mut(newparent.0)?
                .insert(newname.to_owned(), ino.0);
            st.touch_dir(newparent.0);
            let node = st.node_mut(ino.0)?;
            node.nlink += 1;
            node.ctime = SystemTime::now();
            Ok(node.attr(ino.0))
        })();
        entry_reply(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        match st.node_mut(ino.0) {
            Ok(node) if matches!(node.kind, Kind::File(_)) => {
                node.open += 1;
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.lock();
        match st.file_mut(ino.0) {
            Ok(file) => reply.data(&file.read(offset, u64::from(size))),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.lock().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        if let Some(node) = st.nodes.get_mut(&ino.0) {
            node.open = node.open.saturating_sub(1);
        }
        st.collect(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let result = st.file_mut(ino.0).map(|file| {
            file.sync();
        });
        st.fsyncs += 1;
        empty_reply(reply, result);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.lock();
        let (entries, parent) = match st.node(ino.0).map(|n| &n.kind) {
            Ok(Kind::Dir { entries, parent }) => (entries, *parent),
            Ok(_) => return reply.error(Errno::ENOTDIR),
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (parent, FileType::Directory, OsStr::new("..")),
        ];
        let listed = entries.iter().map(|(name, &child)| {
            let kind = st
                .nodes
                .get(&child)
                .map_or(FileType::RegularFile, Inode::file_type);
            (child, kind, name.as_os_str())
        });
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(listed)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable as soon as they change.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.lock();
        let blocks = st.capacity / PAGE;
        let free = st.capacity.saturating_sub(st.used) / PAGE;
        let files = 1 << 20;
        let ffree = files - (st.nodes.len() as u64).min(files);
        reply.statfs(
            blocks,
            free,
            free,
            files,
            ffree,
            PAGE as u32,
            MAX_NAME as u32,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks modes itself.
        empty_reply(reply, self.lock().node(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock();
        let mut inode = Inode::new(Kind::File(FileData::default()), perm_of(mode, umask), req);
        inode.open = 1;
        match st.create(parent.0, name, inode) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let result = match mode {
            0 => {
                let end = offset + length;
                match st.file_mut(ino.0).map(|f| f.size()) {
                    Ok(size) if end > size => st.resize(ino.0, end),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            // Reserving space without growing the file changes nothing visible.
            FALLOC_FL_KEEP_SIZE => st.file_mut(ino.0).map(|_| ()),
            _ => Err(Errno::EOPNOTSUPP),
        };
        empty_reply(reply, result);
    }
}
