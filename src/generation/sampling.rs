//! Choosing the next token from a row of logits: greedy (the default), or a seeded draw after
//! the warpers transformers applies, in its order — repetition penalty, temperature, top-k,
//! top-p, min-p. The draw is a function of the seed, the prompt's step and the logits only, so
//! a prompt samples the same tokens alone or in a batch, on any backend whose logits agree.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How tokens are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy (argmax); above 0 the logits are divided by it and a token is drawn.
    pub temperature: f64,
    /// Keep only the k most likely tokens (drawing only).
    pub top_k: Option<usize>,
    /// Keep the most likely tokens whose probabilities sum to at least this, in (0, 1].
    pub top_p: f64,
    /// Drop the tokens less likely than this fraction of the most likely one, in [0, 1].
    pub min_p: f64,
    /// Above 1, the logits of tokens already in the prompt or the output are divided by it
    /// (multiplied when negative), as in the CTRL paper and transformers. Applies to greedy too.
    pub repetition_penalty: f64,
    /// The seed of every prompt's random stream.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Checks the ranges; the message names the option.
    pub fn check(&self) -> Result<(), String> {
        let finite = |v: f64| v.is_finite();
        if !finite(self.temperature) || self.temperature < 0.0 {
            return Err(format!(
                "--temperature {}: must be 0 (greedy) or more",
                self.temperature
            ));
        }
        if !finite(self.top_p) || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(format!("--top-p {}: must be in (0, 1]", self.top_p));
        }
        if !finite(self.min_p) || !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("--min-p {}: must be in [0, 1]", self.min_p));
        }
        if self.top_k == Some(0) {
            return Err("--top-k 0: keep at least one token".into());
        }
        if !finite(self.repetition_penalty) || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "--repetition-penalty {}: must be more than 0 (1 is none)",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    /// Whether tokens are drawn (temperature above 0) rather than taken greedily.
    pub fn draws(&self) -> bool {
        self.temperature > 0.0
    }
}

/// The token chooser of one prompt: the settings and that prompt's random stream.
pub struct Sampler {
    settings: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler whose stream starts from `settings.seed`.
    pub fn new(settings: &Sampling) -> Sampler {
        Sampler {
            settings: settings.clone(),
            rng: ChaCha8Rng::seed_from_u64(settings.seed),
        }
    }

    /// The next token for `logits` (one row, the vocabulary), given the ids `seen` so far
    /// (prompt and output) for the repetition penalty.
    pub fn next(&mut self, logits: &[f32], seen: &[i64]) -> i64 {
        let s = &self.settings;
        let mut scores: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        if s.repetition_penalty != 1.0 {
            let mut penalised = vec![false; scores.len()];
            for &id in seen {
                if let Some(done) = penalised.get_mut(id as usize).filter(|done| !**done) {
                    *done = true;
                    let v = &mut scores[id as usize];
                    *v = if *v > 0.0 {
                        *v / s.repetition_penalty
                    } else {
                        *v * s.repetition_penalty
                    };
                }
            }
        }
        if !s.draws() {
            return argmax(&scores) as i64;
        }
        // Candidates sorted from most to least likely; ties keep the lower id first.
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        if let Some(k) = s.top_k {
            order.truncate(k);
        }
        let max = scores[order[0]] / s.temperature;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (scores[i] / s.temperature - max).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if s.top_p < 1.0 {
            let mut sum = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    sum += p;
                    sum >= s.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        if s.min_p > 0.0 {
            let floor = s.min_p * probs[0];
            let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut draw = self.rng.random::<f64>() * total;
        for (i, p) in probs.iter().enumerate() {
            draw -= p;
            if draw < 0.0 {
                return order[i] as i64;
            }
        }
        order[probs.len() - 1] as i64
    }
}

/// The index of the largest score; the first of equal ones, as torch's argmax.
fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in scores.iter().enumerate() {
        if *v > scores[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(settings: &Sampling, logits: &[f32], n: usize) -> Vec<i64> {
        let mut sampler = Sampler::new(settings);
        (0..n).map(|_| sampler.next(logits, &[])).collect()
    }

    fn hot(t: f64) -> Sampling {
        Sampling {
            temperature: t,
            ..Sampling::default()
        }
    }

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        let mut s = Sampler::new(&Sampling::default());
        assert_eq!(s.next(&[0.5, 2.0, 2.0, -1.0], &[]), 1);
    }

    #[test]
    fn the_repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let settings = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::default()
        };
        // 3.0 / 2 = 1.5 < 2.0: the seen token loses to the unseen one.
        assert_eq!(Sampler::new(&settings).next(&[3.0, 2.0], &[0, 0]), 1);
        // -1 * 2 = -2 < -1.5.
        assert_eq!(Sampler::new(&settings).next(&[-1.0, -1.5], &[0]), 1);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_another_seed_others() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a = draws(&hot(1.0), &logits, 64);
        assert_eq!(a, draws(&hot(1.0), &logits, 64));
        let other = Sampling {
            seed: 1,
            ..hot(1.0)
        };
        assert_ne!(a, draws(&other, &logits, 64));
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 10,
            "a flat distribution spreads: {distinct:?}"
        );
    }

    #[test]
    fn the_draws_follow_the_distribution() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75].
        let logits = [0.0, 3f32.ln()];
        let n = 20_000;
        let ones = draws(&hot(1.0), &logits, n)
            .iter()
            .filter(|&&t| t == 1)
            .count();
        let share = ones as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.015, "{share}");
        // Temperature 0.5 squares the odds: 9 : 1.
        let ones = draws(&hot(0.5), &logits, n)
            .iter()
            .filter(|&&t| t == 1)
            .count();
        assert!((ones as f64 / n as f64 - 0.9).abs() < 0.01);
    }

    #[test]
    fn top_k_top_p_and_min_p_remove_the_unlikely_tokens() {
        // p ∝ [8, 4, 2, 1, 1]/16.
        let logits: Vec<f32> = [8f32, 4.0, 2.0, 1.0, 1.0].iter().map(|p| p.ln()).collect();
        let seen = |s: Sampling| -> std::collections::BTreeSet<i64> {
            draws(&s, &logits, 2000).into_iter().collect()
        };
        assert_eq!(
            seen(Sampling {
                top_k: Some(2),
                ..hot(1.0)
            }),
            [0, 1].into()
        );
        // 0.5 + 0.25 = 0.75 ≥ 0.7: two tokens.
        assert_eq!(
            seen(Sampling {
                top_p: 0.7,
                ..hot(1.0)
            }),
            [0, 1].into()
        );
        assert_eq!(
            seen(Sampling {
                top_p: 0.76,
                ..hot(1.0)
            }),
            [0, 1, 2].into()
        );
        // The floor is 0.4 times the max 0.5, 0.2: tokens 0 (0.5) and 1 (0.25) stay.
        assert_eq!(
            seen(Sampling {
                min_p: 0.4,
                ..hot(1.0)
            }),
            [0, 1].into()
        );
        assert_eq!(seen(hot(1.0)), [0, 1, 2, 3, 4].into());
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_option() {
        let bad = [
            (
                Sampling {
                    temperature: -0.1,
                    ..Sampling::default()
                },
                "--temperature",
            ),
            (
                Sampling {
                    top_p: 0.0,
                    ..Sampling::default()
                },
                "--top-p",
            ),
            (
                Sampling {
                    top_p: 1.5,
                    ..Sampling::default()
                },
                "--top-p",
            ),
            (
                Sampling {
                    min_p: 2.0,
                    ..Sampling::default()
                },
                "--min-p",
            ),
            (
                Sampling {
                    top_k: Some(0),
                    ..Sampling::default()
                },
                "--top-k",
            ),
            (
                Sampling {
                    repetition_penalty: 0.0,
                    ..Sampling::default()
                },
                "--repetition-penalty",
            ),
            (
                Sampling {
                    temperature: f64::NAN,
                    ..Sampling::default()
                },
                "--temperature",
            ),
        ];
        for (settings, option) in bad {
            assert!(settings.check().unwrap_err().starts_with(option));
        }
        assert!(Sampling::default().check().is_ok());
    }
}
