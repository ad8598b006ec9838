//! `chaosfs`: a FUSE filesystem for power-loss tests.
//!
//! File data lives in memory and is durable only once fsynced; names are durable at once. A
//! client of the control socket simulates a power cut (`cut`): every file goes back to its last
//! fsync, so a process started afterwards sees only what a machine would have found on its
//! disk. It also fills the disk on demand (`capacity`), for disk-full tests.
//!
//! ```text
//! chaosfs MOUNTPOINT --control SOCKET [--capacity BYTES] [--owner UID:GID]
//! ```
//!
//! Control commands, one per line, each answered by one line starting `ok` or `error`:
//! `cut` (power cut: drop what was not fsynced), `stats`, `capacity BYTES`, `capacity full`
//! (no more room than what is used), and `unmount`.

mod data;
mod fs;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};

use clap::Parser;
use fuser::{Config, MountOption, SessionACL};

use fs::{ChaosFs, State, lock};

#[derive(Parser)]
#[command(about = "An in-memory FUSE filesystem that loses unsynced data on a simulated power cut")]
struct Args {
    /// Where to mount it (an existing, empty directory).
    mountpoint: PathBuf,
    /// The control socket to create.
    #[arg(long)]
    control: PathBuf,
    /// Size of the filesystem in bytes.
    #[arg(long, default_value_t = 64 << 30)]
    capacity: u64,
    /// Owner of the root directory, as UID:GID.
    #[arg(long, default_value = "0:0")]
    owner: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some((uid, gid)) = args
        .owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
    else {
        eprintln!("chaosfs: --owner must be UID:GID, not {:?}", args.owner);
        return ExitCode::from(2);
    };
    let state = Arc::new(Mutex::new(State::new(args.capacity, uid, gid)));
    let _ = std::fs::remove_file(&args.control);
    let listener = match UnixListener::bind(&args.control) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chaosfs: cannot bind {}: {e}", args.control.display());
            return ExitCode::from(1);
        }
    };
    let control_state = state.clone();
    let mountpoint = args.mountpoint.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = control_state.clone();
            let mountpoint = mountpoint.clone();
            std::thread::spawn(move || serve(stream, &state, &mountpoint));
        }
    });

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("chaosfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    let result = fuser::mount(ChaosFs::new(state), &args.mountpoint, &config);
    let _ = std::fs::remove_file(&args.control);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaosfs: {}: {e}", args.mountpoint.display());
            ExitCode::from(1)
        }
    }
}

/// Answers the commands of one control connection.
fn serve(stream: UnixStream, state: &Mutex<State>, mountpoint: &Path) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let answer = command(line.trim(), state, mountpoint);
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

fn command(line: &str, state: &Mutex<State>, mountpoint: &Path) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("cut"), None) => {
            let (bytes, files) = lock(state).cut();
            format!("ok dropped={bytes} files={files}")
        }
        (Some("stats"), None) => format!("ok {}", lock(state).stats()),
        (Some("capacity"), Some("full")) => {
            let mut st = lock(state);
            st.capacity = st.used();
            format!("ok capacity={}", st.capacity)
        }
        (Some("capacity"), Some(n)) => match n.parse::<u64>() {
            Ok(bytes) => {
                lock(state).capacity = bytes;
                format!("ok capacity={bytes}")
            }
            Err(_) => format!("error capacity takes a number of bytes or \"full\", not {n:?}"),
        },
        (Some("unmount"), None) => match Command::new("umount").arg(mountpoint).status() {
            Ok(s) if s.success() => "ok".into(),
            Ok(s) => format!("error umount {}: {s}", mountpoint.display()),
            Err(e) => format!("error umount: {e}"),
        },
        _ => format!("error unknown command {line:?} (cut, stats, capacity BYTES|full, unmount)"),
    }
}
