//! Score math: from one example's logits (and its label) to the uncertainty
//! and difficulty scores of Selection via Proxy (Coleman et al., ICLR 2020,
//! arXiv:1906.11829) and the data-pruning literature (EL2N: Paul et al. 2021,
//! arXiv:2107.07075). Pure functions over `&[f32]`, no Arrow, no candle.
//!
//! Every score means **higher = harder / more informative**.

/// The scores of one example.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowScores {
    /// Entropy of the softmax, `-sum p log p`, in nats.
    pub entropy: f32,
    /// `1 - max p`.
    pub least_confidence: f32,
    /// `1 - (p_label - max_{k != label} p_k)`, in [0, 2]; without a label the
    /// top-1 class stands in for it (SVP's margin sampling).
    pub margin: f32,
    /// `||p - onehot(label)||_2`; `None` without a label.
    pub el2n: Option<f32>,
    /// Cross-entropy `-log p_label`; `None` without a label.
    pub loss: Option<f32>,
    /// `argmax p` (lowest index on ties).
    pub pred: usize,
}

/// Numerically stable softmax of `logits` into `probs`; returns
/// `log-sum-exp`, so that `log p_k = logits[k] - lse`.
pub fn softmax(logits: &[f32], probs: &mut [f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (p, &l) in probs.iter_mut().zip(logits) {
        *p = (l - max).exp();
        sum += *p;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
    max + sum.ln()
}

/// Last-layer GraNd (Paul et al. 2021, arXiv:2107.07075) from the EL2N
/// score and the penultimate features `h`: `||p - y|| * sqrt(1 + ||h||^2)`,
/// the norm of the loss gradient with respect to the last layer's weights
/// (`(p - y) h^T`) and bias (`p - y`).
pub fn grand(el2n: f32, features: &[f32]) -> f32 {
    el2n * (1.0 + features.iter().map(|h| h * h).sum::<f32>()).sqrt()
}

/// Index of the largest value (the lowest index on ties; 0 when empty).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (k, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = k;
        }
    }
    best
}

/// Computes every score of one example from its logits. `probs` is scratch
/// space of the same length (reused across rows to avoid allocation).
pub fn row_scores(logits: &[f32], label: Option<usize>, probs: &mut [f32]) -> RowScores {
    let lse = softmax(logits, probs);
    let pred = argmax(probs);
    let top = probs[pred];
    let entropy: f32 = probs.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
    let reference = label.unwrap_or(pred);
    let best_other = probs.iter().enumerate().filter(|&(k, _)| k != reference).map(|(_, &p)| p).fold(0.0f32, f32::max);
    let el2n = label.map(|y| {
        probs.iter().enumerate().map(|(k, &p)| if k == y { (p - 1.0) * (p - 1.0) } else { p * p }).sum::<f32>().sqrt()
    });
    RowScores {
        entropy: entropy.max(0.0),
        least_confidence: 1.0 - top,
        margin: 1.0 - (probs[reference] - best_other),
        el2n,
        loss: label.map(|y| lse - logits[y]),
        pred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from numpy:
    //   l = np.array([2.0, 1.0, 0.1]); p = np.exp(l - l.max()); p /= p.sum()
    //   p = [0.65900114, 0.24243297, 0.09856589]
    //   entropy = -(p*np.log(p)).sum() = 0.84673818
    //   el2n(label=1) = np.linalg.norm(p - [0,1,0]) = 1.00891305
    //   loss(label=1) = -np.log(p[1]) = 1.41703083
    // Tolerance 1e-5 absolute.
    #[test]
    fn scores_match_numpy() {
        let mut probs = [0.0; 3];
        let s = row_scores(&[2.0, 1.0, 0.1], Some(1), &mut probs);
        let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        close(probs[0], 0.659_001_1);
        close(s.entropy, 0.846_738_2);
        close(s.least_confidence, 1.0 - 0.659_001_1);
        close(s.margin, 1.0 - (0.242_432_97 - 0.659_001_1));
        close(s.el2n.unwrap(), 1.008_913);
        close(s.loss.unwrap(), 1.417_030_8);
        assert_eq!(s.pred, 0);
    }

    #[test]
    fn a_confident_correct_example_scores_easier_than_a_mislabeled_one() {
        let mut probs = [0.0; 4];
        let logits = [8.0, 0.0, 0.0, 0.0];
        let right = row_scores(&logits, Some(0), &mut probs);
        let wrong = row_scores(&logits, Some(2), &mut probs);
        assert!(wrong.el2n > right.el2n && wrong.loss > right.loss && wrong.margin > right.margin);
        // Label-free scores do not depend on the label.
        assert_eq!((right.entropy, right.least_confidence), (wrong.entropy, wrong.least_confidence));
    }

    // numpy: p = softmax([2, 1, 0.1]); h = [3, 4]
    //   np.linalg.norm(np.outer(p - [0, 1, 0], h)) ** 2 + np.linalg.norm(p - [0, 1, 0]) ** 2
    //   = 26 * 1.00891305**2, so GraNd = 1.00891305 * sqrt(26) = 5.1444673 (tolerance 1e-4)
    #[test]
    fn grand_is_the_last_layer_gradient_norm() {
        assert!((grand(1.008_913, &[3.0, 4.0]) - 5.144_467).abs() < 1e-4);
        assert_eq!(grand(0.5, &[]), 0.5);
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let mut probs = [0.0; 2];
        let s = row_scores(&[1e30, -1e30], Some(1), &mut probs);
        assert!(s.entropy.is_finite() && s.loss.unwrap().is_finite() && s.el2n.unwrap().is_finite());
        let s = row_scores(&[0.0, 0.0], None, &mut probs);
        assert!((s.entropy - 2f32.ln()).abs() < 1e-6 && s.el2n.is_none());
    }
}
