//! Real Redis deployments for the tests: a three-master Cluster (`redis-server
//! --cluster-enabled yes` × 3 joined by `redis-cli --cluster create`) and a master with
//! a replica watched by one Sentinel. Everything on free loopback ports, killed on drop.

#![allow(dead_code)]

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `redis-cli` with arguments; its stdout.
pub fn cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn(dir: &Path, program: &str, args: &[String], log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).expect("log file");
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Cluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        let ports: Vec<u16> = (0..3).map(|_| RedisServer::free_port()).collect();
        let children = ports
            .iter()
            .map(|p| {
                let args = redis_args(
                    *p,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{p}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ],
                );
                spawn(dir, "redis-server", &args, &format!("redis-{p}.log"))
            })
            .collect();
        for p in &ports {
            wait_for(Duration::from_secs(10), "cluster node up", || {
                cli(&["-p", &p.to_string(), "PING"]).trim() == "PONG"
            });
        }
        let mut create = vec!["--cluster", "create"];
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        create.extend(nodes.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        cli(&create);
        for p in &ports {
            wait_for(Duration::from_secs(20), "cluster_state:ok", || {
                cli(&["-p", &p.to_string(), "CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        Cluster {
            ports,
            children,
            dir: dir.to_path_buf(),
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Keys stored on each node.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|p| {
                cli(&["-p", &p.to_string(), "DBSIZE"])
                    .trim()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Sentinel {
    pub name: String,
    pub master: u16,
    pub replica: u16,
    pub sentinel: u16,
    children: Vec<Child>,
}

impl Sentinel {
    pub fn start(dir: &Path, name: &str) -> Sentinel {
        let (master, replica, sentinel) = (
            RedisServer::free_port(),
            RedisServer::free_port(),
            RedisServer::free_port(),
        );
        let mut children = vec![spawn(
            dir,
            "redis-server",
            &redis_args(master, &[]),
            "master.log",
        )];
        children.push(spawn(
            dir,
            "redis-server",
            &redis_args(replica, &["--replicaof", "127.0.0.1", &master.to_string()]),
            "replica.log",
        ));
        wait_for(Duration::from_secs(10), "replica in sync", || {
            cli(&["-p", &replica.to_string(), "INFO", "replication"])
                .contains("master_link_status:up")
        });
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\nsentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n"
            ),
        )
        .expect("sentinel.conf");
        children.push(spawn(
            dir,
            "redis-sentinel",
            &[conf.to_string_lossy().into_owned()],
            "sentinel.log",
        ));
        let s = Sentinel {
            name: name.to_string(),
            master,
            replica,
            sentinel,
            children,
        };
        wait_for(Duration::from_secs(10), "sentinel knows the master", || {
            s.current_master() == Some(master)
        });
        // The replica must be known to Sentinel before a failover can pick it.
        wait_for(
            Duration::from_secs(15),
            "sentinel knows the replica",
            || s.ask("REPLICAS").contains(&replica.to_string()),
        );
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel)
    }

    /// `SENTINEL <command> <master name>`: Sentinel's answer.
    fn ask(&self, command: &str) -> String {
        cli(&[
            "-p",
            &self.sentinel.to_string(),
            "SENTINEL",
            command,
            &self.name,
        ])
    }

    /// The port Sentinel names as the master now.
    pub fn current_master(&self) -> Option<u16> {
        let out = self.ask("GET-MASTER-ADDR-BY-NAME");
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// `SENTINEL FAILOVER`, then wait until the old replica is the master.
    pub fn failover(&self) {
        // Sentinel refuses (NOGOODSLAVE) while its view of the replica is not fresh
        // enough to promote it: ask again until it takes the failover on.
        wait_for(Duration::from_secs(15), "failover accepted", || {
            let reply = self.ask("FAILOVER");
            reply.trim() == "OK" || reply.contains("INPROGRESS")
        });
        wait_for(Duration::from_secs(20), "failover", || {
            self.current_master() == Some(self.replica)
                && cli(&["-p", &self.replica.to_string(), "ROLE"]).starts_with("master")
        });
    }

    /// Kill the old master (as a crash would): until Sentinel demotes it, it still takes
    /// writes, which a client must not keep sending it after a failover.
    pub fn kill_old_master(&mut self) {
        if let Some(c) = self.children.first_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `redis-server` arguments for a throwaway loopback instance on `port` (no persistence),
/// then `extra`.
fn redis_args(port: u16, extra: &[&str]) -> Vec<String> {
    let port = port.to_string();
    [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}
