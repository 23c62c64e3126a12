//! A scheduler and two executors started as separate `sieve cluster`
//! processes on 127.0.0.1 (free ports, waited for by their health probes,
//! stopped on drop), and queries submitted to them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{pruned, root, sieve, sieve_ok, Reaped};

/// A `sieve cluster` process, killed and reaped on drop; its stderr goes to `log`.
struct Node {
    child: Reaped,
    log: PathBuf,
}

impl Node {
    fn start(args: &[&str], log: PathBuf) -> Node {
        Self::start_with(args, log, None)
    }

    /// Starts a node that kills itself at the fault point `fault`, if any.
    fn start_with(args: &[&str], log: PathBuf, fault: Option<&str>) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sieve"));
        if let Some(point) = fault {
            command.env("SIEVE_FAULT_POINT", point);
        }
        let child = command
            .args(args)
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("sieve cluster starts");
        Node { child: Reaped(child), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET /path` on `port` answers 200, the process having died or `limit` passed.
    fn wait_ready(&mut self, port: u16, path: &str, limit: Duration) {
        let started = Instant::now();
        while !http_ok(port, path) {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                panic!("the node exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(started.elapsed() < limit, "not ready within {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether an HTTP GET of `path` on 127.0.0.1:`port` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scheduler and `executors` executors of one vcore each, ready.
struct Cluster {
    url: String,
    executors: Vec<Node>,
    _scheduler: Node,
    _dir: tempfile::TempDir,
}

/// Flags with which a lost executor is noticed within seconds (Ballista's
/// defaults wait three minutes): the scheduler's, then the executors'.
const PROMPT_SCHEDULER: [&str; 4] = ["--executor-timeout-seconds", "4", "--expire-dead-executor-interval-seconds", "1"];
const PROMPT_EXECUTOR: [&str; 2] = ["--executor-heartbeat-interval-seconds", "1"];

impl Cluster {
    fn start(executors: usize) -> Cluster {
        Self::start_with(executors, None)
    }

    /// A cluster whose first executor kills itself at the fault point
    /// `fault`, and whose scheduler notices that within seconds.
    fn start_with(executors: usize, fault: Option<&str>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args = vec!["cluster", "scheduler", "--bind-host", "127.0.0.1"];
        let port_text = port.to_string();
        args.extend(["--bind-port", &port_text]);
        args.extend(PROMPT_SCHEDULER);
        let mut scheduler = Node::start(&args, dir.path().join("scheduler.log"));
        scheduler.wait_ready(port, "/healthz", Duration::from_secs(30));
        let executors = (0..executors)
            .map(|i| {
                let work = dir.path().join(format!("executor-{i}"));
                std::fs::create_dir(&work).unwrap();
                let health = free_port();
                let mut node = Node::start_with(
                    &[
                        "cluster",
                        "executor",
                        "--bind-host",
                        "127.0.0.1",
                        "--scheduler-host",
                        "127.0.0.1",
                        "--scheduler-port",
                        &port.to_string(),
                        "--bind-port",
                        &free_port().to_string(),
                        "--bind-grpc-port",
                        &free_port().to_string(),
                        "--bind-health-port",
                        &health.to_string(),
                        "--vcores",
                        "1",
                        "--device",
                        "cpu",
                        "--work-dir",
                        work.to_str().unwrap(),
                        PROMPT_EXECUTOR[0],
                        PROMPT_EXECUTOR[1],
                    ],
                    dir.path().join(format!("executor-{i}.log")),
                    fault.filter(|_| i == 0),
                );
                node.wait_ready(health, "/readyz", Duration::from_secs(60));
                node
            })
            .collect();
        Cluster { url: format!("df://127.0.0.1:{port}"), executors, _scheduler: scheduler, _dir: dir }
    }
}

/// `sieve sql` over `out`'s tables, locally or on `cluster`; its standard output.
fn sql(out: &Path, query: &str, cluster: Option<&str>) -> String {
    let mut args = vec!["sql", "--out", out.to_str().unwrap(), "--format", "csv", query];
    if let Some(url) = cluster {
        args.extend(["--cluster", url]);
    }
    String::from_utf8(sieve_ok(&args).stdout).unwrap()
}

#[test]
fn the_executors_run_sieves_functions_and_answer_as_one_machine_does() {
    let out = pruned("shapes");
    let cluster = Cluster::start(2);
    let proxy = out.join("proxy");
    let query = format!(
        "SELECT id, content_hash(img) AS hash, get_field(proxy_scores('{}', img, label), 'el2n') AS el2n FROM kept ORDER BY id",
        proxy.display()
    );
    let local = sql(out, &query, None);
    let remote = sql(out, &query, Some(&cluster.url));
    assert!(local.lines().count() > 100, "the query has rows: {local}");
    assert_eq!(remote, local, "the cluster's answer is the local one");
    // The input table travels as row groups, each row with its position.
    let mut args = vec!["sql", "--dataset", "shapes", "--format", "csv"];
    let query = "SELECT __pos, label, content_hash(img) AS hash FROM input ORDER BY __pos";
    args.push(query);
    let local = String::from_utf8(sieve_ok(&args).stdout).unwrap();
    args.extend(["--cluster", &cluster.url]);
    let remote = String::from_utf8(sieve_ok(&args).stdout).unwrap();
    assert!(local.lines().count() > 1000, "every input row: {}", local.lines().count());
    assert_eq!(remote, local, "the input read on the executors is the local input");
    let tasks: Vec<usize> = cluster.executors.iter().map(|e| e.log().matches("Finished task").count()).collect();
    assert!(tasks.iter().sum::<usize>() > 0, "the executors ran the query's tasks: {tasks:?}");
}

#[test]
fn an_unreachable_scheduler_is_a_clear_error_within_seconds() {
    let out = pruned("shapes");
    let url = format!("df://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let result = sieve(&["sql", "--out", out.to_str().unwrap(), "SELECT count(*) FROM kept", "--cluster", &url]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "an environment error: {stderr}");
    assert!(stderr.contains(&url) && stderr.contains("cannot reach"), "the error names the scheduler: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn a_scheduler_without_executors_is_a_clear_error_not_a_hang() {
    let out = pruned("shapes");
    let cluster = Cluster::start(0);
    let started = Instant::now();
    let result =
        sieve(&["sql", "--out", out.to_str().unwrap(), "SELECT count(*) FROM kept", "--cluster", &cluster.url]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "an environment error: {stderr}");
    assert!(stderr.contains("no executor"), "the error says why: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(90), "took {:?}", started.elapsed());
}

/// Runs `sieve` with `args`, killing it and failing the test when it runs
/// past `limit`.
fn sieve_within(args: &[&str], limit: Duration) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_sieve"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sieve binary runs");
    let mut child = Reaped(child);
    let started = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < limit, "sieve {args:?} ran past {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut output = std::process::Output { status: child.0.wait().unwrap(), stdout: Vec::new(), stderr: Vec::new() };
    child.0.stdout.take().unwrap().read_to_end(&mut output.stdout).unwrap();
    child.0.stderr.take().unwrap().read_to_end(&mut output.stderr).unwrap();
    output
}

/// Fails the test unless the two files hold the same bytes.
fn assert_same_bytes(local: &Path, remote: &Path) {
    let (a, b) = (std::fs::read(local).unwrap(), std::fs::read(remote).unwrap());
    assert!(a == b, "{} and {} differ ({} vs {} bytes)", local.display(), remote.display(), a.len(), b.len());
}

/// The names of a directory's files, sorted.
fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    names
}

/// `sieve score` of the shapes fixture with its pruned proxy into `out`, on `cluster` if given.
fn score_args<'a>(proxy: &'a str, out: &'a str, cluster: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["score", "--dataset", "shapes", "--proxy-dir", proxy, "--quiet", "--out", out];
    if let Some(url) = cluster {
        args.extend(["--cluster", url]);
    }
    args
}

#[test]
fn prune_and_active_learning_on_the_cluster_write_the_local_bytes() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    // Active learning's next batch: the pool is scored on the cluster.
    let (labeled, pool, _) = crate::active::labeled_and_pool(tmp.path());
    let next = |out: &Path, cluster: Option<&str>| {
        let mut args = vec!["select", "--dataset", "reviews", "--labeled", labeled.to_str().unwrap()];
        args.extend([
            "--unlabeled",
            pool.to_str().unwrap(),
            "--budget",
            "50",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        args.extend(cluster.map(|url| ["--cluster", url]).into_iter().flatten());
        let output = sieve_within(&args, Duration::from_secs(300));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let (local, remote) = (tmp.path().join("next-local"), tmp.path().join("next-remote"));
    next(&local, None);
    next(&remote, Some(&cluster.url));
    assert_same_bytes(&local.join("scores.parquet"), &remote.join("scores.parquet"));
    for fixture in ["shapes", "reviews"] {
        let local = pruned(fixture);
        let remote = tmp.path().join(fixture);
        let remote_text = remote.to_str().unwrap();
        let args =
            ["prune", "--dataset", fixture, "--keep", "0.5", "--balance", "class", "--quiet", "--out", remote_text];
        let output = sieve_within(&[&args[..], &["--cluster", &cluster.url]].concat(), Duration::from_secs(300));
        assert!(output.status.success(), "{fixture}: {}", String::from_utf8_lossy(&output.stderr));
        assert_same_bytes(&local.join("scores.parquet"), &remote.join("scores.parquet"));
        assert_eq!(listing(&local.join("data")), listing(&remote.join("data")), "{fixture}: the same data files");
        for name in listing(&local.join("data")) {
            assert_same_bytes(&local.join("data").join(&name), &remote.join("data").join(&name));
        }
        assert!(!tmp.path().join(format!(".{fixture}.work")).exists(), "{fixture}: the shards are gone once committed");
    }
    for name in listing(&local.join("data")) {
        assert_same_bytes(&local.join("data").join(&name), &remote.join("data").join(&name));
    }
    let tasks: Vec<usize> = cluster.executors.iter().map(|e| e.log().matches("Finished task").count()).collect();
    assert!(tasks.iter().all(|&n| n > 0), "both executors scored row groups: {tasks:?}");
}

#[test]
fn an_executor_killed_mid_scoring_is_replaced_by_the_other_and_the_scores_are_the_same() {
    let proxy = pruned("shapes").join("proxy");
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let proxy = proxy.to_str().unwrap();
    sieve_ok(&score_args(proxy, local.to_str().unwrap(), None));
    // The first executor dies (SIGKILL) right after writing its first shard.
    let mut cluster = Cluster::start_with(2, Some("cluster:shard-written"));
    let output =
        sieve_within(&score_args(proxy, remote.to_str().unwrap(), Some(&cluster.url)), Duration::from_secs(120));
    assert!(output.status.success(), "Ballista reran the lost tasks: {}", String::from_utf8_lossy(&output.stderr));
    let killed = &mut cluster.executors[0];
    assert!(killed.child.0.try_wait().unwrap().is_some(), "the first executor died:\n{}", killed.log());
    assert!(killed.log().contains("killed here"), "at the fault point:\n{}", killed.log());
    assert_same_bytes(&local.join("scores.parquet"), &remote.join("scores.parquet"));
}

#[test]
fn a_job_whose_only_executor_dies_fails_clearly_and_its_rerun_reuses_the_shards() {
    let proxy = pruned("shapes").join("proxy");
    let tmp = tempfile::tempdir().unwrap();
    let (local, remote) = (tmp.path().join("local"), tmp.path().join("remote"));
    let (proxy, remote_text) = (proxy.to_str().unwrap(), remote.to_str().unwrap());
    sieve_ok(&score_args(proxy, local.to_str().unwrap(), None));
    {
        let dying = Cluster::start_with(1, Some("cluster:shard-written"));
        let output = sieve_within(&score_args(proxy, remote_text, Some(&dying.url)), Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "no executor is left to finish the job: {stderr}");
        assert!(stderr.contains("executor"), "the error says what was lost: {stderr}");
        assert!(!remote.exists(), "a failed job leaves no output");
    }
    let cluster = Cluster::start(1);
    let output = sieve_within(&score_args(proxy, remote_text, Some(&cluster.url)), Duration::from_secs(120));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reused = crate::util::manifest(&remote)["scoring"]["reused_shards"].as_u64().unwrap();
    assert!(reused >= 1, "the shard written before the executor died is reused: {reused}");
    assert_same_bytes(&local.join("scores.parquet"), &remote.join("scores.parquet"));
}

#[test]
fn a_proxy_the_executors_cannot_load_fails_the_job_clearly_and_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let proxy = tmp.path().join("proxy");
    std::fs::create_dir(&proxy).unwrap();
    for entry in std::fs::read_dir(pruned("shapes").join("proxy")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), proxy.join(entry.file_name())).unwrap();
    }
    // proxy.json (what the client plans with) is intact; the weights are not.
    let weights = std::fs::read_dir(&proxy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"));
    std::fs::write(weights.expect("the proxy has weights"), b"not safetensors").unwrap();
    let cluster = Cluster::start(1);
    let out = tmp.path().join("out");
    let output = sieve_within(
        &score_args(proxy.to_str().unwrap(), out.to_str().unwrap(), Some(&cluster.url)),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("safetensors") || stderr.contains("proxy"), "the error names the proxy: {stderr}");
    assert!(!out.exists(), "a failed job leaves no output");
}
