use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;

use crate::util::{read_parquet, root, sieve_ok, Reaped};

/// A local S3-compatible server (the PyPI package `moto`), stopped on drop.
struct Moto {
    _child: Reaped,
    endpoint: String,
}

/// Starts moto on a free loopback port, or says why it cannot.
fn start_moto() -> Result<Moto, String> {
    let probe = Command::new("python3").args(["-c", "import moto.server, boto3"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err("python3 cannot import moto.server and boto3 (pip install 'moto[server]')".into());
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start moto: {e}"))?;
    let moto = Moto { _child: Reaped(child), endpoint: format!("http://127.0.0.1:{port}") };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("moto did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(moto)
}

const CREDENTIALS: [(&str, &str); 3] =
    [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")];

impl Moto {
    /// Runs a boto3 snippet with `s3` bound to a client of this server.
    fn boto3(&self, code: &str) -> String {
        let script = format!("import boto3\ns3 = boto3.client('s3', endpoint_url='{}')\n{code}", self.endpoint);
        let out = Command::new("python3").args(["-c", &script]).envs(CREDENTIALS).output().unwrap();
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs sieve with the AWS environment pointing at this server.
    fn sieve(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_sieve"))
            .args(args)
            .current_dir(root())
            .envs(CREDENTIALS)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .output()
            .unwrap();
        assert!(out.status.success(), "sieve {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// The keys under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.boto3(&format!(
            "for o in s3.list_objects_v2(Bucket='sieve-test', Prefix='{prefix}').get('Contents', []): print(o['Key'])"
        ));
        let mut keys: Vec<String> = out.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }

    /// Downloads every object under `prefix` into `dest`.
    fn download(&self, prefix: &str, dest: &Path) {
        self.boto3(&format!(
            "import os\nfor o in s3.list_objects_v2(Bucket='sieve-test', Prefix='{prefix}')['Contents']:\n  \
             p = os.path.join('{}', os.path.relpath(o['Key'], '{prefix}'))\n  \
             os.makedirs(os.path.dirname(p), exist_ok=True)\n  s3.download_file('sieve-test', o['Key'], p)",
            dest.display()
        ));
    }
}

const REVIEWS: [&str; 6] = ["--text-column", "sentence", "--label-column", "label", "--id-column", "id"];

/// Prune arguments for the reviews fixture at `train`/`heldout` into `out`.
fn prune_args<'a>(train: &'a str, heldout: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["prune", "--input", train, "--heldout", heldout, "--out", out, "--keep", "0.5", "--quiet"];
    args.extend(REVIEWS);
    args
}

#[test]
fn prune_reads_from_and_writes_to_s3_like_local_files() {
    let moto = match start_moto() {
        Ok(m) => m,
        Err(why) => return crate::util::skip("prune_reads_from_and_writes_to_s3_like_local_files", &why),
    };
    let fixtures = root().join("fixtures/reviews");
    moto.boto3(&format!(
        "s3.create_bucket(Bucket='sieve-test')\nfor f in ['train', 'validation']:\n  \
         s3.upload_file('{0}/' + f + '.parquet', 'sieve-test', 'in/reviews/' + f + ('/part-0' if f == 'train' else '') + '.parquet')",
        fixtures.display()
    ));
    // The same job on local files and on S3, then the S3 output downloaded.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let (train, heldout) = (fixtures.join("train.parquet"), fixtures.join("validation.parquet"));
    sieve_ok(&prune_args(train.to_str().unwrap(), heldout.to_str().unwrap(), local.to_str().unwrap()));
    // The train split as a prefix (directory) and the held-out one as a glob.
    moto.sieve(&prune_args(
        "s3://sieve-test/in/reviews/train",
        "s3://sieve-test/in/reviews/valid*.parquet",
        "s3://sieve-test/out/reviews",
    ));
    let keys = moto.keys("out/reviews/");
    for expected in ["out/reviews/manifest.json", "out/reviews/scores.parquet", "out/reviews/proxy/proxy.json"] {
        assert!(keys.iter().any(|k| k == expected), "{expected} missing from {keys:?}");
    }
    let remote = tmp.path().join("remote");
    moto.download("out/reviews/", &remote);
    assert_eq!(read_parquet(&remote.join("scores.parquet")), read_parquet(&local.join("scores.parquet")));
    assert_eq!(read_parquet(&remote.join("data")), read_parquet(&local.join("data")));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(remote.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["dataset"]["train"][0]["path"], "s3://sieve-test/in/reviews/train/part-0.parquet");

    // Re-selecting into the same prefix from its own scores replaces the
    // output: fewer rows per file, then the stale data files are gone.
    let mut select = vec![
        "select",
        "--input",
        "s3://sieve-test/in/reviews/train/part-0.parquet",
        "--scores",
        "s3://sieve-test/out/reviews/scores.parquet",
        "--out",
        "s3://sieve-test/out/reviews",
    ];
    select.extend(["--keep", "0.2", "--rows-per-file", "100", "--quiet"]);
    select.extend(REVIEWS);
    moto.sieve(&select);
    let data: Vec<String> = moto.keys("out/reviews/data/");
    let kept = moto.sieve(&[
        "sql",
        "--out",
        "s3://sieve-test/out/reviews",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM kept",
    ]);
    let n: usize = String::from_utf8(kept.stdout).unwrap().lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(data.len(), n.div_ceil(100), "only the new output's files remain: {data:?}");
    let reselected = tmp.path().join("reselected");
    moto.download("out/reviews/", &reselected);
    let keep = read_parquet(&reselected.join("scores.parquet"));
    let keep = keep.column_by_name("keep").unwrap().as_boolean().true_count();
    assert_eq!(n, keep);
    assert!(n < read_parquet(&local.join("data")).num_rows(), "the new selection keeps fewer rows");
}
