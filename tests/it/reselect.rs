use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;

use crate::util::{pruned, read_parquet, sieve_ok};

#[test]
fn select_reuses_scores_and_random_baseline_is_seeded() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = tmp.path().join(name);
        sieve_ok(&[
            "select",
            "--dataset",
            "shapes",
            "--scores",
            scored.to_str().unwrap(),
            "--keep",
            "0.3",
            "--strategy",
            "random",
            "--balance",
            "none",
            "--seed",
            seed,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        read_parquet(&out.join("scores.parquet"))
    };
    let a = run("a", "7");
    let b = run("b", "7");
    let c = run("c", "8");
    let keep = |s: &datafusion::arrow::array::RecordBatch| s.column_by_name("keep").unwrap().as_boolean().clone();
    assert_eq!(keep(&a), keep(&b), "same seed, same subset");
    assert_ne!(keep(&a), keep(&c), "another seed, another subset");
    let n = a.num_rows();
    assert_eq!(keep(&a).true_count(), (n as f64 * 0.3).round() as usize);
    // Re-selecting does not rescore: the scores are carried over unchanged.
    let original = read_parquet(&scored.join("scores.parquet"));
    assert_eq!(original.column_by_name("el2n").unwrap().to_data(), a.column_by_name("el2n").unwrap().to_data());
}

/// The CSV lines `sieve sql` prints for `query` over the output `out`,
/// header first.
fn sql_csv(out: &std::path::Path, query: &str) -> Vec<String> {
    let result = sieve_ok(&["sql", "--out", out.to_str().unwrap(), "--format", "csv", query]);
    String::from_utf8(result.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn sql_queries_the_output_tables() {
    let out = pruned("shapes");
    let lines = sql_csv(
        out,
        "SELECT (SELECT COUNT(*) FROM kept) AS kept, (SELECT SUM(CAST(keep AS BIGINT)) FROM scores) AS decided",
    );
    let text = lines.join("\n");
    let row = lines.get(1).expect("a header and a row");
    let (kept, decided) = row.split_once(',').unwrap();
    assert_eq!(kept, decided, "{text}");
    let scores = read_parquet(&out.join("scores.parquet"));
    let kept_in_scores = scores.column_by_name("keep").unwrap().as_boolean().true_count();
    assert_eq!(kept.parse::<usize>().unwrap(), kept_in_scores);
    // The kept table holds exactly the rows scores.parquet keeps, by id.
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let mut expected: Vec<String> =
        (0..ids.len()).filter(|&i| keep.value(i)).map(|i| ids.value(i).to_string()).collect();
    expected.sort_by_key(|id| id.parse::<i64>().unwrap());
    assert_eq!(sql_csv(out, "SELECT id FROM kept ORDER BY id")[1..], expected);
}

#[test]
fn sql_lists_the_functions() {
    let out = sieve_ok(&["sql", "--functions"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for f in ["proxy_scores(", "proxy_embedding(", "content_hash(", "seeded_random("] {
        assert!(text.contains(f), "{f} missing from:\n{text}");
    }
}

#[test]
fn pruning_the_hardest_tenth_by_aum_removes_the_label_noise() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("clean");
    sieve_ok(&[
        "select",
        "--dataset",
        "shapes",
        "--scores",
        scored.to_str().unwrap(),
        "--prune",
        "0.1",
        "--order",
        "easy",
        "--score",
        "aum",
        "--balance",
        "none",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let flipped: std::collections::HashSet<i64> = crate::util::truth("shapes").flipped.into_iter().collect();
    let kept_noise = (0..ids.len()).filter(|&i| keep.value(i) && flipped.contains(&ids.value(i))).count();
    assert!(kept_noise * 4 <= flipped.len(), "{kept_noise} of {} flipped labels survived", flipped.len());
}

/// `dup_of` pairs exactly the fixture's planted duplicates, none of them kept.
fn assert_flags_exactly_the_planted_duplicates(scores: &RecordBatch, fixture: &str) {
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let dup_of = scores.column_by_name("dup_of").unwrap().as_primitive::<Int64Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    // In the fixtures ids are positions, so `dup_of` (a row) names the original's id.
    let mut flagged: Vec<(i64, i64)> =
        (0..ids.len()).filter(|&i| dup_of.is_valid(i)).map(|i| (dup_of.value(i), ids.value(i))).collect();
    let mut planted = crate::util::truth(fixture).duplicates;
    flagged.sort();
    planted.sort();
    assert_eq!(flagged, planted, "every exact duplicate and nothing else");
    assert!((0..ids.len()).all(|i| !(dup_of.is_valid(i) && keep.value(i))), "duplicates are never kept");
}

/// Text runs embed with all-MiniLM-L6-v2 (fetched by `make models`, which
/// `make test` runs first) when a method reads embeddings.
#[test]
fn text_dedup_embeds_with_the_encoder_and_flags_exactly_the_planted_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reviews");
    sieve_ok(&[
        "prune",
        "--dataset",
        "reviews",
        "--dedup",
        "1e-4",
        "--keep",
        "0.9",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    assert_flags_exactly_the_planted_duplicates(&scores, "reviews");
    let manifest: serde_json::Value = crate::util::manifest(&out);
    assert_eq!(manifest["dataset"]["embedding"]["encoder"], "models/all-MiniLM-L6-v2");
    let embedding = scores.column_by_name("embedding").unwrap().as_fixed_size_list();
    assert_eq!(embedding.value_length(), 384);
}

#[test]
fn embedding_methods_flag_exact_duplicates_and_write_exact_schedules() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g");
    sieve_ok(&[
        "select",
        "--dataset",
        "shapes",
        "--scores",
        scored.to_str().unwrap(),
        "--dedup",
        "1e-6",
        "--schedule",
        "step:0.25,0.5,1",
        "--score",
        "prototype",
        "--keep",
        "0.5",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    assert_flags_exactly_the_planted_duplicates(&scores, "shapes");
    let ids = scores.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let stage = scores.column_by_name("stage").unwrap().as_primitive::<Int64Type>();
    let n = ids.len() as f64;
    for (s, f) in [0.25, 0.5, 1.0].iter().enumerate() {
        let used = (0..ids.len()).filter(|&i| stage.value(i) <= s as i64).count();
        assert_eq!(used, (f * n).round() as usize, "stage {s}");
    }
    assert!(scores.column_by_name("prototype").is_some());
}

/// `--strategy kcenter` keeps exactly the greedy k-center kernel's picks
/// (per class, over the valid rows' embeddings) in the kernel's pick order,
/// the requested fraction of every class.
#[test]
fn kcenter_keeps_the_kernels_picks_and_the_requested_fraction_of_every_class() {
    use sieve_selection::{kcenter::k_center_greedy_per_class, Embeddings};
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("k");
    sieve_ok(&[
        "select",
        "--dataset",
        "shapes",
        "--scores",
        scored.to_str().unwrap(),
        "--strategy",
        "kcenter",
        "--keep",
        "0.3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let m: serde_json::Value = crate::util::manifest(&out);
    for class in m["selection"]["per_class"].as_array().unwrap() {
        let (rows, kept) = (class["rows"].as_f64().unwrap(), class["kept"].as_u64().unwrap());
        assert_eq!(kept, (rows * 0.3).round() as u64, "{class}");
    }
    let scores = read_parquet(&out.join("scores.parquet"));
    let error = scores.column_by_name("error").unwrap();
    let valid: Vec<usize> = (0..scores.num_rows()).filter(|&i| error.is_null(i)).collect();
    let labels = scores.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    let labels: Vec<u32> = valid.iter().map(|&i| labels.value(i) as u32).collect();
    let list = scores.column_by_name("embedding").unwrap().as_fixed_size_list();
    let dim = list.value_length() as usize;
    let all = list.values().as_primitive::<datafusion::arrow::datatypes::Float32Type>().values();
    let values: Vec<f32> = valid.iter().flat_map(|&i| all[i * dim..(i + 1) * dim].iter().copied()).collect();
    let picks = k_center_greedy_per_class(&Embeddings::new(&values, dim).unwrap(), &labels, 0.3, &[], 0).unwrap();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let mut kept: Vec<usize> = (0..scores.num_rows()).filter(|&i| keep.value(i)).collect();
    let mut expected: Vec<usize> = picks.iter().map(|&p| valid[p]).collect();
    let rank = scores.column_by_name("kcenter_rank").unwrap().as_primitive::<Int64Type>();
    let ranks: Vec<i64> = expected.iter().map(|&i| rank.value(i)).collect();
    assert_eq!(ranks, (0..picks.len() as i64).collect::<Vec<_>>(), "kcenter_rank is the kernel's pick order");
    kept.sort();
    expected.sort();
    assert_eq!(kept, expected, "the kept rows are the kernel's picks");
}

#[test]
fn order_auto_keeps_easy_examples_when_few_are_kept_per_class() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("auto");
    // 1,200 rows, 4 classes, keep 0.5: 150 per class, under the 1,000 per
    // class (and the 60% of the rows) from which the rule keeps hard examples.
    sieve_ok(&[
        "select",
        "--dataset",
        "shapes",
        "--scores",
        scored.to_str().unwrap(),
        "--strategy",
        "score",
        "--order",
        "auto",
        "--keep",
        "0.5",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let m: serde_json::Value = crate::util::manifest(&out);
    assert_eq!(m["config"]["select"]["order"], "easy");
    let scores = read_parquet(&out.join("scores.parquet"));
    let el2n = scores.column_by_name("el2n").unwrap().as_primitive::<datafusion::arrow::datatypes::Float32Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let mean = |kept: bool| {
        let v: Vec<f32> = (0..el2n.len()).filter(|&i| keep.value(i) == kept).map(|i| el2n.value(i)).collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    assert!(mean(true) < mean(false), "easy rows kept");
}

#[test]
fn a_config_file_supplies_flags_and_the_command_line_overrides_it() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("job.toml");
    std::fs::write(&config, "dataset = \"shapes\"\nkeep = 0.3\nbalance = \"none\"\nquiet = true\n").unwrap();
    let out = tmp.path().join("o");
    sieve_ok(&[
        "select",
        "--config",
        config.to_str().unwrap(),
        "--scores",
        scored.to_str().unwrap(),
        "--keep",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let m: serde_json::Value = crate::util::manifest(&out);
    assert_eq!(m["config"]["select"]["keep"], 0.5, "the command line wins");
    assert_eq!(m["config"]["select"]["balance"], "none", "the file supplies what the command line leaves out");
    assert_eq!(m["config"]["run"]["quiet"], true);
}

#[test]
fn json_logs_are_one_object_per_line_with_stage_and_level() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let result = sieve_ok(&[
        "select",
        "--dataset",
        "shapes",
        "--scores",
        scored.to_str().unwrap(),
        "--log-format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8(result.stderr).unwrap();
    let events: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(events.iter().all(|e| e["level"] == "info" && e["ts"].is_f64()), "{stderr}");
    let stages: Vec<&str> = events.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        ["device", "label_issues", "near_dups", "leaks", "select", "write", "report", "done"],
        "{stderr}"
    );
}

#[test]
fn proxy_embedding_gives_the_features_the_scores_hold() {
    let out = pruned("shapes");
    let proxy = out.join("proxy");
    let query = format!(
        "SELECT arrow_typeof(proxy_embedding('{p}', img)) AS t, COUNT(*) AS n FROM input GROUP BY 1",
        p = proxy.display()
    );
    let result = sieve_ok(&["sql", "--dataset", "shapes", "--format", "csv", &query]);
    let text = String::from_utf8(result.stdout).unwrap();
    assert_eq!(text.lines().nth(1), Some("FixedSizeList(64 x non-null Float32),1200"), "{text}");
    // The same forward pass as proxy_scores: the first row's embedding matches scores.parquet.
    let first = format!("SELECT proxy_embedding('{p}', img) AS e FROM input LIMIT 1", p = proxy.display());
    let result = sieve_ok(&["sql", "--dataset", "shapes", "--format", "json", &first]);
    let row: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let scores = read_parquet(&out.join("scores.parquet"));
    let stored = scores.column_by_name("embedding").unwrap().as_fixed_size_list().value(0);
    let stored = stored.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
    let queried: Vec<f32> = row["e"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(queried.len(), 64);
    for (a, b) in queried.iter().zip(stored.values()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// Whether the rows of each schedule stage score at most the rows of every
/// later stage by `column` (ties may straddle a boundary).
fn stages_follow(scores: &RecordBatch, column: &str) -> bool {
    let stage = scores.column_by_name("stage").unwrap().as_primitive::<Int64Type>();
    let score = scores.column_by_name(column).unwrap().as_primitive::<datafusion::arrow::datatypes::Float32Type>();
    let mut ranges = std::collections::BTreeMap::<i64, (f32, f32)>::new();
    for i in (0..stage.len()).filter(|&i| stage.is_valid(i) && score.is_valid(i)) {
        let r = ranges.entry(stage.value(i)).or_insert((f32::INFINITY, f32::NEG_INFINITY));
        *r = (r.0.min(score.value(i)), r.1.max(score.value(i)));
    }
    let ranges: Vec<(f32, f32)> = ranges.into_values().collect();
    ranges.len() > 1 && ranges.windows(2).all(|w| w[0].1 <= w[1].0)
}

#[test]
fn an_easy_first_schedule_orders_its_stages_by_the_requested_score() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    // Scores of the raw scoring, training dynamics, and one computed in the schedule's own step.
    for score in ["el2n", "entropy", "aum", "forgetting", "learned_epoch", "el2n_early", "prototype"] {
        let out = tmp.path().join(score);
        sieve_ok(&[
            "select",
            "--dataset",
            "shapes",
            "--scores",
            scored.to_str().unwrap(),
            "--schedule",
            "step:0.25,0.5,1",
            "--score",
            score,
            "--keep",
            "0.5",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        let scores = read_parquet(&out.join("scores.parquet"));
        assert!(stages_follow(&scores, score), "the stages do not follow {score}");
        if score != "el2n" {
            assert!(!stages_follow(&scores, "el2n"), "the stages of --score {score} follow el2n");
        }
    }
    // In `prune` the training dynamics are joined after the schedule's step.
    let out = tmp.path().join("prune");
    sieve_ok(&[
        "prune",
        "--dataset",
        "shapes",
        "--schedule",
        "step:0.5,1",
        "--score",
        "forgetting",
        "--keep",
        "0.5",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_parquet(&out.join("scores.parquet"));
    assert!(stages_follow(&scores, "forgetting") && !stages_follow(&scores, "el2n"));
}

#[test]
fn sql_has_the_array_functions_for_the_embedding_column() {
    let out = pruned("shapes");
    let lines = sql_csv(
        out,
        "SELECT cardinality(embedding) AS dim, array_element(embedding, 1) = embedding[1] AS same FROM scores LIMIT 1",
    );
    let scores = read_parquet(&out.join("scores.parquet"));
    let dim = scores.column_by_name("embedding").unwrap().as_fixed_size_list().value_length();
    assert_eq!(lines.get(1), Some(&format!("{dim},true")), "{lines:?}");
}

#[test]
fn a_reader_that_stops_reading_ends_sql_with_success() {
    use std::io::{BufRead, BufReader};
    let out = pruned("shapes");
    // 1,440,000 rows, far more than a pipe holds.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
        .args(["sql", "--out", out.to_str().unwrap(), "--format", "csv", "SELECT a.row, b.row FROM scores a, scores b"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // then closed, as `head -1` does
    let done = child.wait_with_output().unwrap();
    assert_eq!(first.trim(), "row,row");
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(done.stderr.is_empty(), "{}", String::from_utf8_lossy(&done.stderr));
}

/// `--strategy ccs` on the image fixture, checked against the paper's
/// algorithm done here by hand: per class, the hardest tenth by `el2n` is
/// never kept; the rest, cut into 5 strata of equal width, keep the
/// water-filled shares of the class's quota (smallest stratum first, each
/// `min(rows, left / strata left)`).
#[test]
fn coverage_centric_selection_keeps_the_water_filled_share_of_every_stratum() {
    let scored = pruned("shapes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ccs");
    let mut args = vec!["select", "--dataset", "shapes", "--scores", scored.to_str().unwrap()];
    args.extend(["--strategy", "ccs", "--keep", "0.3", "--hard-cutoff", "0.1", "--strata", "5"]);
    args.extend(["--quiet", "--out", out.to_str().unwrap()]);
    sieve_ok(&args);
    let scores = read_parquet(&out.join("scores.parquet"));
    let label = scores.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    let el2n = scores.column_by_name("el2n").unwrap().as_primitive::<datafusion::arrow::datatypes::Float32Type>();
    let keep = scores.column_by_name("keep").unwrap().as_boolean();
    let error = scores.column_by_name("error").unwrap();
    let classes: std::collections::BTreeSet<i64> = (0..scores.num_rows()).map(|i| label.value(i)).collect();
    let mut strata_seen = 0;
    for class in classes {
        let mut rows: Vec<usize> =
            (0..scores.num_rows()).filter(|&i| label.value(i) == class && error.is_null(i)).collect();
        let quota = (rows.len() as f64 * 0.3).round() as usize;
        // Hardest first; ties by position, as the query breaks them.
        rows.sort_by(|&a, &b| el2n.value(b).total_cmp(&el2n.value(a)).then(a.cmp(&b)));
        let cut = (rows.len() as f64 * 0.1).floor() as usize;
        assert!(rows[..cut].iter().all(|&i| !keep.value(i)), "class {class}: a row of the hardest tenth is kept");
        let rest = &rows[cut..];
        let (lo, hi) = rest.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &i| {
            let s = el2n.value(i) as f64;
            (lo.min(s), hi.max(s))
        });
        let bin = |i: usize| {
            if hi > lo {
                (((el2n.value(i) as f64 - lo) * 5.0 / (hi - lo)).floor() as usize).min(4)
            } else {
                0
            }
        };
        let mut per_bin = [(0usize, 0usize); 5]; // (rows, kept)
        for &i in rest {
            per_bin[bin(i)].0 += 1;
            per_bin[bin(i)].1 += keep.value(i) as usize;
        }
        let mut order: Vec<usize> = (0..5).filter(|&b| per_bin[b].0 > 0).collect();
        order.sort_by_key(|&b| (per_bin[b].0, b));
        let mut left = quota;
        for (done, &b) in order.iter().enumerate() {
            let share = per_bin[b].0.min(left / (order.len() - done));
            left -= share;
            assert_eq!(per_bin[b].1, share, "class {class}, stratum {b} of {per_bin:?}");
        }
        strata_seen += order.len();
        let kept = (0..scores.num_rows()).filter(|&i| label.value(i) == class && keep.value(i)).count();
        assert_eq!(kept, quota, "class {class}: the strata fill the class's quota");
    }
    assert!(strata_seen > 2 * 3, "the example spans several strata per class: {strata_seen}");
}

/// Where `auto` cannot decide label issues (scores without `probs`), it
/// drops none, and the manifest's configuration says so.
#[test]
fn auto_without_probabilities_drops_no_label_issues_and_says_so() {
    let mut scores = read_parquet(&pruned("shapes").join("scores.parquet"));
    scores.remove_column(scores.schema().index_of("probs").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("scores.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, scores.schema(), None).unwrap();
    writer.write(&scores).unwrap();
    writer.close().unwrap();
    let out = tmp.path().join("o");
    let (scores_arg, out_arg) = (path.to_str().unwrap(), out.to_str().unwrap());
    sieve_ok(&["select", "--dataset", "shapes", "--scores", scores_arg, "--quiet", "--no-report", "--out", out_arg]);
    let m = crate::util::manifest(&out);
    assert!(m.get("label_issues").is_none_or(|v| v.is_null()), "{}", m["label_issues"]);
    assert_eq!(m["config"]["select"]["strategy"], "ccs");
    assert_eq!(m["config"]["select"]["drop_label_issues"], false, "no label issue was decided, so none dropped");
}
