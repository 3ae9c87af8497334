//! A data-parallel training group over TCP: the processes of one training job (started by
//! `srun`, one per node or device, or by hand) exchange each step's gradients.
//!
//! Rank 0 listens on an address of its own choosing and writes it to a rendezvous file in a
//! directory every process sees (the models directory); the others wait for the file and
//! connect, introducing themselves by rank and group size. Rank 0 then removes the file, so a
//! later job cannot read a stale address. Each round, every other process sends its message
//! to rank 0, and rank 0 sends each of them everyone else's: a star, which is plenty for the
//! few processes of a job and keeps the order of every sum in the hands of the receiver.
//! Frames are a round number, a length and the bytes. A process that leaves, or one that is a
//! round ahead or behind, fails the group: rank 0's error names it; the others, which talk
//! only to rank 0, report losing rank 0. A connection that does not introduce itself as a
//! member is ignored.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the processes of a group find each other.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    /// The file rank 0 writes its address into (in a directory every process sees); unique to
    /// the job (under Slurm, named by the job id).
    pub file: PathBuf,
    /// The address rank 0 listens on, `host:port` (port 0: any free port). `127.0.0.1:0` when
    /// every process runs on one node; an address of the node's cluster network otherwise.
    pub bind: String,
    /// The host the others should connect to when `bind` is a wildcard (`0.0.0.0`): the node's
    /// name or address.
    pub advertise: Option<String>,
    /// How long to wait for the others to join, and for any one message.
    pub timeout: Duration,
}

/// Why a group could not form or lost a member.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A socket or the rendezvous file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The processes disagree, or one did not come.
    #[error("{0}")]
    Protocol(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GroupError {
    let what = what.into();
    move |source| GroupError::Io { what, source }
}

const MAGIC: &[u8; 4] = b"LIMG";

/// One process's end of a group.
#[derive(Debug)]
pub struct TcpGroup {
    rank: usize,
    world: usize,
    /// Rank 0: the streams to ranks 1, 2, …; any other rank: the stream to rank 0.
    peers: Vec<TcpStream>,
    round: u64,
}

impl TcpGroup {
    /// Joins the group as `rank` of `world`; returns once every process has joined.
    ///
    /// # Errors
    /// The address cannot be bound or reached, the file cannot be written or read, the others
    /// did not join within the timeout, or they disagree on the group's size.
    pub fn join(rank: usize, world: usize, rv: &Rendezvous) -> Result<TcpGroup, GroupError> {
        if world == 0 || rank >= world {
            return Err(GroupError::Protocol(format!(
                "rank {rank} is outside a group of {world} processes"
            )));
        }
        let peers = if world == 1 {
            Vec::new()
        } else if rank == 0 {
            lead(world, rv)?
        } else {
            vec![follow(rank, world, rv)?]
        };
        for s in &peers {
            s.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
            s.set_read_timeout(Some(rv.timeout))
                .map_err(io("read timeout"))?;
            s.set_write_timeout(Some(rv.timeout))
                .map_err(io("write timeout"))?;
        }
        Ok(TcpGroup {
            rank,
            world,
            peers,
            round: 0,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Processes in the group.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Every process's `mine` for this round, in rank order.
    ///
    /// # Errors
    /// A process left, timed out, or is in another round.
    pub fn all_gather(&mut self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, GroupError> {
        let round = self.round;
        self.round += 1;
        let mut all = vec![Vec::new(); self.world];
        if self.rank == 0 {
            for (i, s) in self.peers.iter_mut().enumerate() {
                all[i + 1] = read_frame(s, round, i + 1)?;
            }
            all[0] = mine;
            for (i, s) in self.peers.iter_mut().enumerate() {
                for (r, bytes) in all.iter().enumerate() {
                    if r != i + 1 {
                        write_frame(s, round, bytes, i + 1)?;
                    }
                }
            }
        } else {
            let s = &mut self.peers[0];
            write_frame(s, round, &mine, 0)?;
            for (r, slot) in all.iter_mut().enumerate() {
                if r != self.rank {
                    *slot = read_frame(s, round, 0)?;
                }
            }
            all[self.rank] = mine;
        }
        Ok(all)
    }
}

fn lead(world: usize, rv: &Rendezvous) -> Result<Vec<TcpStream>, GroupError> {
    let listener = TcpListener::bind(&rv.bind).map_err(io(format!("listening on {}", rv.bind)))?;
    let addr = listener.local_addr().map_err(io("the listening address"))?;
    let host = match &rv.advertise {
        Some(h) => h.clone(),
        None if addr.ip().is_unspecified() => {
            return Err(GroupError::Protocol(format!(
                "rank 0 listens on {addr}, a wildcard: name the host the others should connect to (the node's name or address)"
            )));
        }
        None => addr.ip().to_string(),
    };
    write_atomic(&rv.file, format!("{host}:{}\n", addr.port()).as_bytes())?;
    // The file goes once everyone has joined, and on every way out.
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&rv.file);
    listener
        .set_nonblocking(true)
        .map_err(io("a non-blocking listener"))?;
    let deadline = Instant::now() + rv.timeout;
    let mut peers: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    let mut joined = 0;
    while joined < world - 1 {
        match listener.accept() {
            Ok((mut s, from)) => {
                s.set_nonblocking(false).map_err(io("a blocking stream"))?;
                // A member introduces itself at once; a silent connection is not one.
                s.set_read_timeout(Some(rv.timeout.min(Duration::from_secs(5))))
                    .map_err(io("read timeout"))?;
                // Something that is not one of the group (a probe of the port): ignore it.
                let Ok((r, w)) = read_hello(&mut s) else {
                    continue;
                };
                if w != world || r == 0 || r >= world || peers[r - 1].is_some() {
                    return Err(GroupError::Protocol(format!(
                        "a process from {from} joined as rank {r} of {w}, in a group of {world} that has {}",
                        if r > 0 && r < world && peers[r - 1].is_some() {
                            "that rank already"
                        } else {
                            "no such rank"
                        }
                    )));
                }
                peers[r - 1] = Some(s);
                joined += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = peers
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    return Err(GroupError::Protocol(format!(
                        "rank(s) {} of {world} did not join within {:?} (rendezvous {})",
                        missing.join(", "),
                        rv.timeout,
                        rv.file.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io("accepting a process")(e)),
        }
    }
    Ok(peers.into_iter().flatten().collect())
}

fn follow(rank: usize, world: usize, rv: &Rendezvous) -> Result<TcpStream, GroupError> {
    let deadline = Instant::now() + rv.timeout;
    let mut last = String::from("no rendezvous file yet");
    loop {
        if let Ok(text) = std::fs::read_to_string(&rv.file)
            && let Some(addr) = text.lines().next().filter(|l| !l.is_empty())
        {
            match TcpStream::connect(addr) {
                Ok(mut s) => {
                    let mut hello = MAGIC.to_vec();
                    hello.extend((rank as u32).to_le_bytes());
                    hello.extend((world as u32).to_le_bytes());
                    s.write_all(&hello)
                        .map_err(io(format!("introducing rank {rank} to {addr}")))?;
                    return Ok(s);
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(GroupError::Protocol(format!(
                "rank {rank} found no rank 0 within {:?} through {} ({last}); is rank 0 running, and on another node, did it listen on an address this node can reach (--group-bind)?",
                rv.timeout,
                rv.file.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_hello(s: &mut TcpStream) -> Result<(usize, usize), String> {
    let mut b = [0u8; 12];
    s.read_exact(&mut b).map_err(|e| e.to_string())?;
    if &b[..4] != MAGIC {
        return Err("not a LIM process".into());
    }
    let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
    Ok((u(4), u(8)))
}

fn write_frame(s: &mut TcpStream, round: u64, bytes: &[u8], peer: usize) -> Result<(), GroupError> {
    let mut head = round.to_le_bytes().to_vec();
    head.extend((bytes.len() as u64).to_le_bytes());
    s.write_all(&head)
        .and_then(|()| s.write_all(bytes))
        .map_err(io(format!("sending round {round} to rank {peer}")))
}

fn read_frame(s: &mut TcpStream, round: u64, peer: usize) -> Result<Vec<u8>, GroupError> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).map_err(io(format!(
        "receiving round {round} from rank {peer} (did it stop?)"
    )))?;
    let mut w = [0u8; 8];
    w.copy_from_slice(&head[..8]);
    let theirs = u64::from_le_bytes(w);
    w.copy_from_slice(&head[8..]);
    let len = u64::from_le_bytes(w);
    if theirs != round {
        return Err(GroupError::Protocol(format!(
            "rank {peer} is in round {theirs}, this process in round {round}: the processes run different commands"
        )));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= 1 << 34)
        .ok_or_else(|| GroupError::Protocol(format!("rank {peer} sent a frame of {len} bytes")))?;
    let mut out = vec![0u8; len];
    s.read_exact(&mut out).map_err(io(format!(
        "receiving round {round} from rank {peer} (did it stop?)"
    )))?;
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GroupError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    lim_market::files::write_atomic(path, bytes).map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(dir: &Path, timeout_ms: u64) -> Rendezvous {
        Rendezvous {
            file: dir.join("rv"),
            bind: "127.0.0.1:0".into(),
            advertise: None,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn three_processes_gather_every_message_in_rank_order_round_after_round() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rv = rv(dir.path(), 10_000);
        let out: Vec<Vec<Vec<Vec<u8>>>> = std::thread::scope(|s| {
            // Followers first: they wait for the file.
            let hs: Vec<_> = [2usize, 1, 0]
                .into_iter()
                .map(|rank| {
                    let rv = rv.clone();
                    s.spawn(move || {
                        let mut g = TcpGroup::join(rank, 3, &rv).unwrap_or_else(|e| panic!("{e}"));
                        (0..3u8)
                            .map(|round| {
                                // Sizes differ by rank, one message is large.
                                let n = if rank == 1 { 300_000 } else { rank + 1 };
                                let all = g
                                    .all_gather(vec![round * 10 + rank as u8; n])
                                    .unwrap_or_else(|e| panic!("{e}"));
                                all.iter().map(|m| m[..m.len().min(2)].to_vec()).collect()
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("a rank panicked")))
                .collect()
        });
        for rounds in &out {
            for (round, all) in rounds.iter().enumerate() {
                let r = round as u8 * 10;
                assert_eq!(all, &vec![vec![r], vec![r + 1, r + 1], vec![r + 2, r + 2]]);
            }
        }
        assert!(
            !rv.file.exists(),
            "the rendezvous file is removed once all joined"
        );
    }

    #[test]
    fn a_connection_that_is_not_a_member_is_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rv = rv(dir.path(), 10_000);
        let got = std::thread::scope(|s| {
            let rv1 = rv.clone();
            let follower = s.spawn(move || {
                // A stranger connects first and says something else.
                let addr = loop {
                    if let Ok(a) = std::fs::read_to_string(&rv1.file) {
                        break a.trim().to_string();
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                let mut stranger = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
                let _ = stranger.write_all(b"GET / HTTP/1.0\r\n\r\n");
                drop(stranger);
                let mut g = TcpGroup::join(1, 2, &rv1).unwrap_or_else(|e| panic!("{e}"));
                g.all_gather(vec![1]).unwrap_or_else(|e| panic!("{e}"))
            });
            let mut g = TcpGroup::join(0, 2, &rv).unwrap_or_else(|e| panic!("{e}"));
            let mine = g.all_gather(vec![0]).unwrap_or_else(|e| panic!("{e}"));
            let theirs = follower
                .join()
                .unwrap_or_else(|_| panic!("rank 1 panicked"));
            (mine, theirs)
        });
        assert_eq!(got.0, vec![vec![0], vec![1]]);
        assert_eq!(got.1, vec![vec![0], vec![1]]);
    }

    #[test]
    fn a_missing_process_or_a_stopped_one_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let e = TcpGroup::join(0, 3, &rv(dir.path(), 300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank(s) 1, 2 of 3 did not join"), "{e}");
        let e = TcpGroup::join(1, 2, &rv(dir.path(), 300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 1 found no rank 0"), "{e}");
        let rv = rv(dir.path(), 10_000);
        let e = std::thread::scope(|s| {
            let rv2 = rv.clone();
            let h = s.spawn(move || {
                let g = TcpGroup::join(1, 2, &rv2).unwrap_or_else(|e| panic!("{e}"));
                drop(g);
            });
            let mut g = TcpGroup::join(0, 2, &rv).unwrap_or_else(|e| panic!("{e}"));
            h.join().unwrap_or_else(|_| panic!("rank 1 panicked"));
            g.all_gather(vec![1]).unwrap_err().to_string()
        });
        assert!(e.contains("from rank 1 (did it stop?)"), "{e}");
    }
}
