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
        let child = Command::new(env!("CARGO_BIN_EXE_sieve"))
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

impl Cluster {
    fn start(executors: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut scheduler = Node::start(
            &["cluster", "scheduler", "--bind-host", "127.0.0.1", "--bind-port", &port.to_string()],
            dir.path().join("scheduler.log"),
        );
        scheduler.wait_ready(port, "/healthz", Duration::from_secs(30));
        let executors = (0..executors)
            .map(|i| {
                let work = dir.path().join(format!("executor-{i}"));
                std::fs::create_dir(&work).unwrap();
                let health = free_port();
                let mut node = Node::start(
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
                    ],
                    dir.path().join(format!("executor-{i}.log")),
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

#[test]
fn the_input_table_on_a_cluster_is_a_usage_error() {
    // Checked before connecting: no cluster needed.
    let result = sieve(&["sql", "--dataset", "shapes", "SELECT count(*) FROM input", "--cluster", "df://127.0.0.1:1"]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("input table"), "the error says which table: {stderr}");
}
