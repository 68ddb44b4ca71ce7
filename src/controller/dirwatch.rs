//! Watching directories for changes to their files.
//!
//! On Linux the watch is an inotify descriptor read on the runtime's own reactor, so watching
//! costs no thread. It matters on the request path: in a process with one thread glibc skips
//! its multi-thread bookkeeping (thread cancellation around every `recv` and `send`, `malloc`'s
//! lock), ~275 of a one-worker gateway's ~19,000 instructions per request (`bench/callgrind.sh`).
//! Elsewhere the watch is the `notify` crate's, which reads the OS's events on a thread of its
//! own.

use std::io;
use std::path::Path;

pub use super::pace::Change;

/// What a watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    /// The file or directory that changed; `None` when the OS dropped events (its queue
    /// overflowed), so that anything under the watch may have changed.
    pub path: Option<&'a Path>,
    /// Whether whatever was written is all there ([`Change`]).
    pub change: Change,
}

/// Called with each change a [`DirWatch`] sees: on the runtime (Linux) or on the watch's thread.
pub type OnChange = Box<dyn FnMut(Seen<'_>) + Send>;

/// Watches directories; dropping it stops every watch.
pub struct DirWatch(Backend);

enum Backend {
    #[cfg(target_os = "linux")]
    Inotify(inotify_backend::Watch),
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Notify(notify_backend::Watch),
}

impl DirWatch {
    /// A watch that calls `on_change` for every change under the directories it is given
    /// ([`Self::watch`]). On Linux it must be made within a tokio runtime, which reads its events.
    pub fn new(on_change: impl FnMut(Seen<'_>) + Send + 'static) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        return inotify_backend::Watch::new(Box::new(on_change)).map(|w| Self(Backend::Inotify(w)));
        #[cfg(not(target_os = "linux"))]
        return Self::with_notify(on_change);
    }

    /// A watch by the `notify` crate (a thread of its own), whatever the OS.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    pub(crate) fn with_notify(
        on_change: impl FnMut(Seen<'_>) + Send + 'static,
    ) -> io::Result<Self> {
        notify_backend::Watch::new(Box::new(on_change)).map(|w| Self(Backend::Notify(w)))
    }

    /// Watches `dir`, and with `recursive` every directory under it, also those made later.
    pub fn watch(&mut self, dir: &Path, recursive: bool) -> io::Result<()> {
        match &mut self.0 {
            #[cfg(target_os = "linux")]
            Backend::Inotify(w) => w.watch(dir, recursive),
            Backend::Notify(w) => w.watch(dir, recursive),
        }
    }

    /// Stops watching `dir` (not the directories under it that a recursive watch added).
    pub fn unwatch(&mut self, dir: &Path) {
        match &mut self.0 {
            #[cfg(target_os = "linux")]
            Backend::Inotify(w) => w.unwatch(dir),
            Backend::Notify(w) => w.unwatch(dir),
        }
    }
}

#[cfg(target_os = "linux")]
mod inotify_backend {
    use std::collections::{HashMap, HashSet};
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard};

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::{Change, OnChange, Seen};

    /// Every event that can change what a file holds or where it is. `ONLYDIR`: only
    /// directories are watched (a file is watched through its directory, as editors and
    /// Kubernetes volumes replace files by rename).
    const MASK: WatchMask = WatchMask::ATTRIB
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MODIFY)
        .union(WatchMask::MOVE_SELF)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::ONLYDIR);

    /// Room for at least one event with the longest name (16 bytes and `NAME_MAX` + 1).
    const BUFFER: usize = 4096;

    /// The watched directories, shared by the watch and the task that reads its events.
    #[derive(Default)]
    struct Dirs {
        /// Each watch's directory, and whether the watch is recursive.
        by_wd: HashMap<WatchDescriptor, (PathBuf, bool)>,
        /// The directories recursive watches were asked for: walked again when events are lost.
        roots: Vec<PathBuf>,
    }

    pub(super) struct Watch {
        watches: Watches,
        dirs: Arc<Mutex<Dirs>>,
        task: tokio::task::AbortHandle,
    }

    impl Watch {
        pub(super) fn new(on_change: OnChange) -> io::Result<Self> {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(io::Error::other("watching files needs a tokio runtime"));
            }
            let inotify = Inotify::init()?;
            let watches = inotify.watches();
            // SAFETY: the descriptor stays open and the same while the `AsyncFd` lives: `Inotify`
            // closes it only when it and every `Watches` are dropped, and the `AsyncFd` owns the
            // `Inotify` (nothing can call its `close`).
            #[allow(unsafe_code)]
            let events = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }?;
            let dirs = Arc::new(Mutex::new(Dirs::default()));
            let task = tokio::spawn(read(events, watches.clone(), dirs.clone(), on_change));
            Ok(Self {
                watches,
                dirs,
                task: task.abort_handle(),
            })
        }

        pub(super) fn watch(&mut self, dir: &Path, recursive: bool) -> io::Result<()> {
            let mut dirs = lock(&self.dirs);
            add(
                &mut self.watches,
                &mut dirs,
                dir,
                recursive,
                &mut HashSet::new(),
            )?;
            if recursive && !dirs.roots.iter().any(|r| r == dir) {
                dirs.roots.push(dir.to_path_buf());
            }
            Ok(())
        }

        pub(super) fn unwatch(&mut self, dir: &Path) {
            let mut dirs = lock(&self.dirs);
            let gone: Vec<WatchDescriptor> = dirs
                .by_wd
                .iter()
                .filter(|(_, (d, _))| d == dir)
                .map(|(wd, _)| wd.clone())
                .collect();
            for wd in gone {
                dirs.by_wd.remove(&wd);
                let _ = self.watches.remove(wd);
            }
            dirs.roots.retain(|r| r != dir);
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            // The task owns the descriptor's registration with the reactor: ending it closes
            // the descriptor (with the last `Watches`, this one's).
            self.task.abort();
        }
    }

    fn lock(dirs: &Mutex<Dirs>) -> MutexGuard<'_, Dirs> {
        dirs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches `dir`, and if `recursive` the directories under it that `seen` does not hold yet
    /// (a symbolic link back up the tree is watched once).
    fn add(
        watches: &mut Watches,
        dirs: &mut Dirs,
        dir: &Path,
        recursive: bool,
        seen: &mut HashSet<WatchDescriptor>,
    ) -> io::Result<()> {
        let wd = watches.add(dir, MASK)?;
        dirs.by_wd
            .insert(wd.clone(), (dir.to_path_buf(), recursive));
        if !recursive || !seen.insert(wd) {
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir()
                && let Err(e) = add(watches, dirs, &path, true, seen)
            {
                tracing::warn!(dir = %path.display(), error = %e, "cannot watch a directory");
            }
        }
        Ok(())
    }

    /// What an event says about the change: `None` for events that change nothing.
    pub(super) fn classify(mask: EventMask) -> Option<Change> {
        let complete = EventMask::CLOSE_WRITE
            | EventMask::MOVED_FROM
            | EventMask::MOVED_TO
            | EventMask::ATTRIB
            | EventMask::DELETE
            | EventMask::DELETE_SELF
            | EventMask::MOVE_SELF
            | EventMask::UNMOUNT;
        if mask.intersects(complete) || mask.contains(EventMask::CREATE | EventMask::ISDIR) {
            // Closed after writing, renamed, removed, only its metadata changed, or a new
            // directory: no write in progress.
            Some(Change::Complete)
        } else if mask.intersects(EventMask::CREATE | EventMask::MODIFY) {
            // Data written, or a file created: its data (and the close) follow.
            Some(Change::Partial)
        } else {
            None
        }
    }

    /// Reads events until the watch is dropped, and calls `on_change` for each change.
    async fn read(
        mut events: AsyncFd<Inotify>,
        mut watches: Watches,
        dirs: Arc<Mutex<Dirs>>,
        mut on_change: OnChange,
    ) {
        let mut buffer = vec![0; BUFFER];
        loop {
            let mut ready = match events.readable_mut().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::warn!(error = %e, "file watch error; changes need a reload");
                    return;
                }
            };
            let into = &mut buffer;
            let read = match ready.try_io(move |fd| fd.get_mut().read_events(into)) {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "file watch error; changes need a reload");
                    return;
                }
                Err(_would_block) => continue,
            };
            for event in read {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    // Events were lost, among them perhaps new directories: watch the trees
                    // again, and reload.
                    let mut dirs = lock(&dirs);
                    let mut seen = HashSet::new();
                    for root in dirs.roots.clone() {
                        let _ = add(&mut watches, &mut dirs, &root, true, &mut seen);
                    }
                    drop(dirs);
                    on_change(Seen {
                        path: None,
                        change: Change::Complete,
                    });
                    continue;
                }
                let mut dirs = lock(&dirs);
                if event.mask.contains(EventMask::IGNORED) {
                    // The directory is gone or no longer watched.
                    dirs.by_wd.remove(&event.wd);
                    continue;
                }
                let Some((dir, recursive)) = dirs.by_wd.get(&event.wd).cloned() else {
                    continue;
                };
                let path = match event.name {
                    Some(name) => dir.join(name),
                    None => dir,
                };
                if recursive
                    && event.mask.contains(EventMask::ISDIR)
                    && event
                        .mask
                        .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                    && let Err(e) = add(&mut watches, &mut dirs, &path, true, &mut HashSet::new())
                {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot watch a directory");
                }
                drop(dirs);
                if let Some(change) = classify(event.mask) {
                    on_change(Seen {
                        path: Some(&path),
                        change,
                    });
                }
            }
        }
    }
}

mod notify_backend {
    use std::io;
    use std::path::Path;

    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

    use super::{Change, OnChange, Seen};

    pub(super) struct Watch(RecommendedWatcher);

    impl Watch {
        pub(super) fn new(mut on_change: OnChange) -> io::Result<Self> {
            let watcher =
                notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                    Ok(event) => {
                        let Some(change) = classify(&event.kind) else {
                            return;
                        };
                        for path in &event.paths {
                            on_change(Seen {
                                path: Some(path),
                                change,
                            });
                        }
                        if event.need_rescan() || event.paths.is_empty() {
                            on_change(Seen { path: None, change });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "file watch error"),
                })
                .map_err(io::Error::other)?;
            Ok(Self(watcher))
        }

        pub(super) fn watch(&mut self, dir: &Path, recursive: bool) -> io::Result<()> {
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            self.0.watch(dir, mode).map_err(io::Error::other)
        }

        pub(super) fn unwatch(&mut self, dir: &Path) {
            let _ = self.0.unwatch(dir);
        }
    }

    /// What a file event says about the change: `None` for events that change nothing (reads).
    pub(super) fn classify(kind: &EventKind) -> Option<Change> {
        match kind {
            // The writer closed the file: whatever it wrote is all there.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Complete),
            EventKind::Access(_) => None,
            // inotify reports a rename as `From` and `To`, then `Both` repeating the pair: the
            // `To` (or `From`) already said it. A second trigger for one rename would reload
            // twice, the second time up to a window later, possibly reading a file half-way
            // through its own replacement by then.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
            // Renamed into (or out of) place, removed, or only its metadata changed: no write
            // in progress.
            EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_))
            | EventKind::Remove(_) => Some(Change::Complete),
            EventKind::Create(CreateKind::Folder) => Some(Change::Complete),
            // Data written, a file created (its data follows), or a backend that does not say.
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => {
                Some(Change::Partial)
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use notify::event::{DataChange, MetadataKind, RemoveKind};

        use super::*;

        #[test]
        fn a_closed_renamed_or_removed_file_is_complete() {
            for kind in [
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                EventKind::Remove(RemoveKind::File),
            ] {
                assert_eq!(classify(&kind), Some(Change::Complete), "{kind:?}");
            }
        }

        #[test]
        fn a_data_write_or_a_new_file_waits_for_its_close() {
            for kind in [
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                EventKind::Create(CreateKind::File),
                EventKind::Any,
            ] {
                assert_eq!(classify(&kind), Some(Change::Partial), "{kind:?}");
            }
        }

        #[test]
        fn reads_change_nothing() {
            let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
            assert_eq!(classify(&read), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    type Made = fn(OnChange) -> io::Result<DirWatch>;

    /// Both backends: inotify on the reactor (on Linux) and `notify`'s thread (elsewhere).
    fn backends() -> Vec<(&'static str, Made)> {
        let mut all: Vec<(&'static str, Made)> = vec![("notify", |f| DirWatch::with_notify(f))];
        #[cfg(target_os = "linux")]
        all.push(("inotify", |f| DirWatch::new(f)));
        all
    }

    /// A watch that sends what it sees, paths made owned.
    fn sending(made: Made) -> (DirWatch, mpsc::UnboundedReceiver<(Option<PathBuf>, Change)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = made(Box::new(move |seen: Seen<'_>| {
            let _ = tx.send((seen.path.map(Path::to_path_buf), seen.change));
        }))
        .unwrap();
        (watch, rx)
    }

    /// Waits for a change to `path`, skipping others.
    async fn change_to(
        rx: &mut mpsc::UnboundedReceiver<(Option<PathBuf>, Change)>,
        path: &Path,
        change: Change,
    ) {
        let wait = async {
            while let Some((p, c)) = rx.recv().await {
                if p.as_deref() == Some(path) && c == change {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            panic!("no {change:?} change to {}", path.display());
        }
    }

    #[tokio::test]
    async fn a_written_file_is_partial_then_complete_when_closed() {
        for (name, made) in backends() {
            let dir = tempfile::tempdir().unwrap();
            let (mut watch, mut rx) = sending(made);
            watch.watch(dir.path(), false).unwrap();
            let file = dir.path().join("a.yaml");
            std::fs::write(&file, "kind: Route\n").unwrap();
            change_to(&mut rx, &file, Change::Partial).await;
            change_to(&mut rx, &file, Change::Complete).await;
            eprintln!("{name}: ok");
        }
    }

    /// A recursive watch follows a directory made after it started, and files written into it.
    #[tokio::test]
    async fn a_recursive_watch_follows_new_directories() {
        for (name, made) in backends() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("old")).unwrap();
            let (mut watch, mut rx) = sending(made);
            watch.watch(dir.path(), true).unwrap();
            let old = dir.path().join("old/a.yaml");
            std::fs::write(&old, "a").unwrap();
            change_to(&mut rx, &old, Change::Complete).await;
            let new = dir.path().join("new");
            std::fs::create_dir(&new).unwrap();
            change_to(&mut rx, &new, Change::Complete).await;
            // The new directory's watch is added when its creation is read: give it that turn.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let file = new.join("b.yaml");
            std::fs::write(&file, "b").unwrap();
            change_to(&mut rx, &file, Change::Complete).await;
            eprintln!("{name}: ok");
        }
    }

    #[tokio::test]
    async fn an_unwatched_directory_is_quiet() {
        for (name, made) in backends() {
            let dir = tempfile::tempdir().unwrap();
            let (mut watch, mut rx) = sending(made);
            watch.watch(dir.path(), false).unwrap();
            watch.unwatch(dir.path());
            std::fs::write(dir.path().join("a.yaml"), "a").unwrap();
            let seen = tokio::time::timeout(Duration::from_millis(300), async {
                // `notify` may still report its own removal of the watch (no path).
                loop {
                    match rx.recv().await {
                        Some((Some(p), c)) => return Some((p, c)),
                        Some((None, _)) => continue,
                        None => return None,
                    }
                }
            })
            .await;
            assert!(matches!(seen, Err(_) | Ok(None)), "{name}: {seen:?}");
        }
    }

    /// Watching on the reactor leaves the process its threads: none is started for it.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_inotify_watch_starts_no_thread() {
        let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let before = threads();
            let (mut watch, mut rx) = sending(|f| DirWatch::new(f));
            watch.watch(dir.path(), true).unwrap();
            let file = dir.path().join("a.yaml");
            std::fs::write(&file, "a").unwrap();
            change_to(&mut rx, &file, Change::Complete).await;
            assert_eq!(threads(), before);
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn inotify_events_are_classified() {
        use inotify::EventMask;

        use super::inotify_backend::classify;
        for mask in [
            EventMask::CLOSE_WRITE,
            EventMask::MOVED_TO,
            EventMask::MOVED_FROM,
            EventMask::ATTRIB,
            EventMask::DELETE,
            EventMask::DELETE_SELF,
            EventMask::CREATE | EventMask::ISDIR,
        ] {
            assert_eq!(classify(mask), Some(Change::Complete), "{mask:?}");
        }
        for mask in [EventMask::MODIFY, EventMask::CREATE] {
            assert_eq!(classify(mask), Some(Change::Partial), "{mask:?}");
        }
        assert_eq!(classify(EventMask::IGNORED), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn outside_a_runtime_the_inotify_watch_is_an_error() {
        let err = DirWatch::new(|_| {}).err().unwrap();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
