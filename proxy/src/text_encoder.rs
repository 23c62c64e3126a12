//! A pretrained sentence encoder: all-MiniLM-L6-v2 (or any BERT checkpoint
//! laid out as sentence-transformers saves it) run through sieve's own
//! packed BERT forward pass ([`crate::bert`]), tokenized with the
//! `tokenizers` crate, mean pooled over the tokens and L2-normalised, as
//! sentence-transformers'
//! `Transformer -> Pooling(mean) -> Normalize` pipeline does. For text
//! datasets it replaces the proxy's features as the embedding that
//! prototypes, k-center and SemDeDup work on: a fastText proxy's features
//! know only the label, so near-duplicates by meaning do not fall together.
//!
//! A directory whose `config.json` says `"model_type": "model2vec"` holds a
//! static model instead ([`crate::static_embedding`]): the same tokenizer, a
//! table of token vectors, a sentence the mean of its tokens' vectors.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Bert, BertConfig, Scratch as BertScratch};
use crate::error::{ProxyError, Result};
use crate::static_embedding::{StaticConfig, StaticTable, MODEL_TYPE};
use crate::wordpiece::{Scratch, WordPiece};

/// Longest input in tokens (sentence-transformers' `max_seq_length` for
/// all-MiniLM-L6-v2); longer texts are truncated, as there.
const MAX_TOKENS: usize = 256;
/// Tokens per forward pass (at least one text each). A pass runs on one
/// thread, passes in parallel. Smaller passes keep more of their
/// activations (15 KB a token for MiniLM) in cache, larger ones spread the
/// packing of each weight matrix over more tokens: 10,000 SST-2 sentences
/// took 14.4, 13.7, 12.6 and 13.0 s with 256, 512, 1024 and 2048 tokens on
/// a 2-core AVX-512 Xeon. Texts are sorted by length first.
const TOKENS_PER_PASS: usize = 1024;

/// A loaded sentence encoder.
pub struct TextEncoder {
    model: Model,
    tokenizer: Tokenizer,
    dim: usize,
    name: String,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder").field("name", &self.name).field("dim", &self.dim).finish()
    }
}

/// What embeds the tokens.
enum Model {
    /// A BERT checkpoint: attention over the sentence, mean pooled.
    Bert(Box<Bert>),
    /// A static model: each token's vector, averaged; `unk`, the
    /// tokenizer's unknown token, is left out (as model2vec does). `ids`
    /// computes the token ids when it supports the tokenizer.
    Static { table: StaticTable, unk: Option<u32>, ids: Option<WordPiece> },
}

fn encoder_err(dir: &Path, message: impl std::fmt::Display) -> ProxyError {
    ProxyError::Encoder { dir: dir.to_path_buf(), message: message.to_string() }
}

impl TextEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from
    /// `dir` (the layout `make models` writes).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(encoder_err(dir, format!("missing {name} (run `make models`)")))
            }
        };
        let config_text = std::fs::read_to_string(read("config.json")?)
            .map_err(|source| ProxyError::Io { path: dir.join("config.json"), source })?;
        let name = dir.file_name().map_or_else(|| "encoder".to_string(), |n| n.to_string_lossy().into_owned());
        let mut tokenizer = Tokenizer::from_file(read("tokenizer.json")?).map_err(|e| encoder_err(dir, e))?;
        tokenizer.with_padding(None);
        if let Some(config) =
            serde_json::from_str::<StaticConfig>(&config_text).ok().filter(|c| c.model_type == MODEL_TYPE)
        {
            read("model.safetensors")?;
            let table = StaticTable::load(dir, &config)?;
            tokenizer.with_truncation(None).map_err(|e| encoder_err(dir, e))?;
            let unk = tokenizer.token_to_id("[UNK]");
            let ids = WordPiece::from_tokenizer(&tokenizer);
            return Ok(Self { dim: table.dim(), model: Model::Static { table, unk, ids }, tokenizer, name });
        }
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| encoder_err(dir, format!("config.json: {e}")))?;
        let model = Model::Bert(Box::new(Bert::load(&config, &read("model.safetensors")?)?));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| encoder_err(dir, e))?;
        Ok(Self { model, tokenizer, dim: config.hidden_size, name })
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The encoder's name (its directory's name), for manifests.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a static model (a table of token vectors).
    pub fn is_static(&self) -> bool {
        matches!(self.model, Model::Static { .. })
    }

    /// Embeds `texts`: `texts.len() x dim` floats, row-major, each row of
    /// unit length (a static model's row is zero when no token of the text
    /// is known).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let bert = match &self.model {
            Model::Bert(bert) => bert,
            Model::Static { table, unk, ids } => {
                let known = |id: &u32| Some(*id) != *unk;
                let mut out = vec![0.0f32; texts.len() * self.dim];
                match ids {
                    Some(wordpiece) => out.par_chunks_mut(self.dim).zip(texts).for_each_init(
                        || (Scratch::default(), Vec::new()),
                        |(scratch, ids), (row, text)| {
                            ids.clear();
                            wordpiece.ids(text, scratch, ids);
                            table.embed(ids.iter().copied().filter(known), row);
                        },
                    ),
                    None => {
                        let encodings = self.tokenize(texts, false)?;
                        out.par_chunks_mut(self.dim).zip(&encodings).for_each(|(row, e)| {
                            table.embed(e.get_ids().iter().copied().filter(known), row);
                        });
                    }
                }
                return Ok(out);
            }
        };
        let encodings = self.tokenize(texts, true)?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        self.passes(bert, &ids, true)
    }

    /// The vector of every token of the vocabulary on its own, as model2vec
    /// distils them: `[CLS] token [SEP]` through the encoder, mean pooled
    /// over the three, not normalised; `vocabulary x dim` floats, row `i`
    /// the token of id `i`. A static model has no encoder to run.
    pub fn token_vectors(&self) -> Result<Vec<f32>> {
        let Model::Bert(bert) = &self.model else {
            return Err(self.err("a static model has no encoder to distil"));
        };
        let specials = self.tokenize(&[""], true)?.remove(0).get_ids().to_vec();
        let [first, last] = specials[..] else {
            return Err(self.err(format!("the tokenizer wraps a sentence in {} special tokens, not 2", specials.len())));
        };
        let vocabulary = self.tokenizer.get_vocab_size(true) as u32;
        let sequences: Vec<[u32; 3]> = (0..vocabulary).map(|t| [first, t, last]).collect();
        let ids: Vec<&[u32]> = sequences.iter().map(|s| &s[..]).collect();
        self.passes(bert, &ids, false)
    }

    fn err(&self, message: impl std::fmt::Display) -> ProxyError {
        ProxyError::Encoder { dir: PathBuf::from(&self.name), message: message.to_string() }
    }

    fn tokenize(&self, texts: &[&str], special: bool) -> Result<Vec<tokenizers::Encoding>> {
        self.tokenizer.encode_batch(texts.to_vec(), special).map_err(|e| self.err(e))
    }

    /// Mean-pooled outputs of `bert` for token sequences, in their order,
    /// scaled to unit length if `normalize`: sorted by length into passes of
    /// about [`TOKENS_PER_PASS`] tokens, run in parallel. An empty
    /// sequence's row is zero.
    fn passes(&self, bert: &Bert, ids: &[&[u32]], normalize: bool) -> Result<Vec<f32>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut passes = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let (mut end, mut tokens) = (start + 1, ids[order[start]].len());
            while end < order.len() && tokens + ids[order[end]].len() <= TOKENS_PER_PASS {
                tokens += ids[order[end]].len();
                end += 1;
            }
            passes.push(&order[start..end]);
            start = end;
        }
        let dim = self.dim;
        let pooled = passes
            .par_iter()
            .map_init(BertScratch::default, |scratch, pass| {
                let sequences: Vec<&[u32]> = pass.iter().map(|&i| ids[i]).collect();
                let mut hidden = bert.forward(&sequences, scratch)?;
                let mut rows = vec![0.0f32; pass.len() * dim];
                for (row, sequence) in rows.chunks_exact_mut(dim).zip(&sequences) {
                    let (tokens, rest) = hidden.split_at(sequence.len() * dim);
                    hidden = rest;
                    tokens.chunks_exact(dim).for_each(|t| row.iter_mut().zip(t).for_each(|(o, t)| *o += t));
                    let count = sequence.len().max(1) as f32;
                    let norm = if normalize { row.iter().map(|x| x * x).sum::<f32>().sqrt() } else { count };
                    let scale = 1.0 / norm.max(1e-12);
                    row.iter_mut().for_each(|x| *x *= scale);
                }
                Ok(rows)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![0.0f32; ids.len() * dim];
        for (pass, rows) in passes.iter().zip(&pooled) {
            for (&i, row) in pass.iter().zip(rows.chunks_exact(dim)) {
                out[i * dim..(i + 1) * dim].copy_from_slice(row);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
    }

    /// The reference sentences and their sentence-transformers embeddings
    /// (fixtures/minilm_reference.json).
    pub(crate) fn reference() -> serde_json::Value {
        let text = std::fs::read_to_string(repo().join("fixtures/minilm_reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    /// The reference was computed once with Python sentence-transformers
    /// (fixtures/minilm_reference.py); `make test` fetches the model first.
    #[test]
    fn embeddings_match_sentence_transformers() {
        let dir = repo().join("models/all-MiniLM-L6-v2");
        let encoder = TextEncoder::load(&dir).expect("encoder in models/ (run `make models`)");
        let reference = reference();
        let sentences: Vec<&str> =
            reference["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let ours = encoder.encode(&sentences).unwrap();
        assert_eq!(encoder.dim(), 384);
        for (i, expected) in reference["embeddings"].as_array().unwrap().iter().enumerate() {
            let expected: Vec<f32> = expected.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let got = &ours[i * 384..(i + 1) * 384];
            let c = cosine(got, &expected);
            assert!(c >= 0.99999, "sentence {i}: cosine {c}");
            assert!((got.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "unit length");
        }
        // Batching with other lengths (padding) must not change a sentence's embedding.
        let alone = encoder.encode(&sentences[..1]).unwrap();
        assert!(cosine(&alone, &ours[..384]) > 0.99999);
    }

    /// Spearman's rank correlation (no ties expected).
    fn spearman(a: &[f32], b: &[f32]) -> f64 {
        let ranks = |v: &[f32]| {
            let mut order: Vec<usize> = (0..v.len()).collect();
            order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
            let mut r = vec![0.0; v.len()];
            order.iter().enumerate().for_each(|(rank, &i)| r[i] = rank as f64);
            r
        };
        let (ra, rb) = (ranks(a), ranks(b));
        let n = a.len() as f64;
        1.0 - 6.0 * ra.iter().zip(&rb).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / (n * (n * n - 1.0))
    }

    /// `make models` distils the static model from MiniLM (`sieve distill`).
    #[test]
    fn the_static_model_ranks_sentence_pairs_as_minilm_does() {
        let minilm = TextEncoder::load(&repo().join("models/all-MiniLM-L6-v2")).expect("run `make models`");
        let fast = TextEncoder::load(&repo().join("models/all-MiniLM-L6-v2-static")).expect("run `make models`");
        assert!(fast.is_static() && !minilm.is_static());
        assert_eq!(fast.dim(), 256);
        // Four topics, three sentences each, none sharing a content word
        // with another of its topic.
        let sentences = [
            "the soup was cold and the bread stale",
            "we ordered pasta with garlic and tomatoes",
            "this restaurant serves delicious grilled fish",
            "heavy rain is expected over the weekend",
            "a storm brought snow and strong winds",
            "tomorrow will be sunny and warm",
            "the striker scored twice in the final",
            "our team lost the match after extra time",
            "the goalkeeper saved a penalty",
            "the film's plot drags but the acting is superb",
            "a moving drama with a brilliant cast",
            "the director's new movie is a boring mess",
        ];
        let (a, b) = (minilm.encode(&sentences).unwrap(), fast.encode(&sentences).unwrap());
        let pairs: Vec<(usize, usize)> = (0..12).flat_map(|i| (i + 1..12).map(move |j| (i, j))).collect();
        let sim = |e: &[f32], d: usize, (i, j): (usize, usize)| cosine(&e[i * d..(i + 1) * d], &e[j * d..(j + 1) * d]);
        let slow: Vec<f32> = pairs.iter().map(|&p| sim(&a, 384, p)).collect();
        let quick: Vec<f32> = pairs.iter().map(|&p| sim(&b, 256, p)).collect();
        let rho = spearman(&slow, &quick);
        assert!(rho > 0.5, "Spearman of the 66 pair similarities, static against MiniLM: {rho}");
        // Every sentence's nearest other sentence is of its topic.
        for (i, sentence) in sentences.iter().enumerate() {
            let nearest =
                (0..12).filter(|&j| j != i).max_by(|&x, &y| sim(&b, 256, (i, x)).total_cmp(&sim(&b, 256, (i, y))));
            assert_eq!(nearest.map(|j| j / 3), Some(i / 3), "{sentence}");
        }
        for row in b.chunks(256) {
            assert!((row.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "unit length");
        }
    }

    /// The shipped static model takes the ids-only tokenizer, and it gives
    /// the embeddings the `tokenizers` crate's ids give.
    #[test]
    fn the_static_model_embeds_as_with_the_tokenizers_crate() {
        let mut encoder = TextEncoder::load(&repo().join("models/all-MiniLM-L6-v2-static")).expect("run `make models`");
        let reference = reference();
        let mut sentences: Vec<&str> =
            reference["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        sentences.extend(["", "[UNK] [CLS] Ça va? 東京 naïve", "zzzzqqqxj unaffable"]);
        let fast = encoder.encode(&sentences).unwrap();
        let Model::Static { ids, .. } = &mut encoder.model else { panic!("a static model") };
        assert!(ids.take().is_some(), "MiniLM's tokenizer is supported by the ids-only path");
        assert_eq!(fast, encoder.encode(&sentences).unwrap());
    }

    #[test]
    fn a_missing_directory_names_the_fix() {
        let err = TextEncoder::load(Path::new("/nonexistent/encoder")).unwrap_err().to_string();
        assert!(err.contains("make models"), "{err}");
    }
}
