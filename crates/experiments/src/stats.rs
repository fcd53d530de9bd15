//! The posterior of each variant's first-year value per view, by simulation: a view converts
//! with probability `p ~ Beta(1 + payments, 1 + views − payments)` and a conversion is worth
//! `μ`, drawn by the Bayesian bootstrap over the values seen (a normal approximation past
//! [`BOOTSTRAP_MAX`] of them; the pooled mean of every variant's while a variant has none).
//! From the same draws come each variant's credible interval, its probability to beat the
//! control and its probability to be best (Thompson sampling's shares). Seeded: the same data
//! give the same figures.

// Probabilities and simulated draws are floats; money is not: amounts enter as whole minor
// units and every figure shown is rounded back to whole minor units by the report.
#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp1, StandardNormal};

/// Past this many values a conversion's mean is drawn from a normal approximation.
pub const BOOTSTRAP_MAX: usize = 256;

/// One variant's evidence.
#[derive(Debug, Clone, Default)]
pub struct Arm {
    /// Views served.
    pub views: u64,
    /// The first-year value of each paying conversion (minor units of one currency).
    pub values: Vec<f64>,
}

/// One variant's posterior.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmPosterior {
    /// The observed value per 1 000 views.
    pub per_1000: f64,
    /// The 2.5 % quantile of the value per 1 000 views.
    pub low: f64,
    /// The 97.5 % quantile.
    pub high: f64,
    /// The probability that its value per view is above the control's (`None` for the
    /// control itself).
    pub beat_control: Option<f64>,
    /// The probability that it is the best variant (Thompson sampling's share).
    pub best: f64,
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// One draw of the mean value of a conversion.
fn draw_mean(rng: &mut rand::rngs::StdRng, values: &[f64], pooled: f64) -> f64 {
    if values.is_empty() {
        return pooled;
    }
    if values.len() > BOOTSTRAP_MAX {
        let n = values.len() as f64;
        let m = mean(values);
        let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
        let z: f64 = StandardNormal.sample(rng);
        return m + z * (var / n).sqrt();
    }
    let (mut weighted, mut total) = (0.0, 0.0);
    for value in values {
        let w: f64 = Exp1.sample(rng);
        weighted += w * value;
        total += w;
    }
    if total > 0.0 {
        weighted / total
    } else {
        pooled
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The posterior of every arm from `draws` simulations seeded by `seed`; `control` is the
/// index of the control.
#[must_use]
pub fn posterior(arms: &[Arm], control: usize, draws: usize, seed: u64) -> Vec<ArmPosterior> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let all: Vec<f64> = arms.iter().flat_map(|a| a.values.iter().copied()).collect();
    let pooled = mean(&all);
    let betas: Vec<Option<Beta<f64>>> = arms
        .iter()
        .map(|arm| {
            let payments = arm.values.len() as u64;
            let views = arm.views.max(payments);
            Beta::new(1.0 + payments as f64, 1.0 + (views - payments) as f64).ok()
        })
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(draws); arms.len()];
    let mut beats = vec![0_usize; arms.len()];
    let mut bests = vec![0_usize; arms.len()];
    let mut row = vec![0.0; arms.len()];
    for _ in 0..draws {
        for (index, arm) in arms.iter().enumerate() {
            let p = betas[index].map_or(0.0, |beta| beta.sample(&mut rng));
            row[index] = p * draw_mean(&mut rng, &arm.values, pooled);
            samples[index].push(row[index] * 1_000.0);
        }
        let top = row
            .iter()
            .enumerate()
            // Ties (e.g. two arms with nothing at all) go to a random one of them.
            .map(|(i, v)| (i, *v, rng.random::<u32>()))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            .map_or(0, |(i, _, _)| i);
        bests[top] += 1;
        for (index, beat) in beats.iter_mut().enumerate() {
            if row[index] > row[control] {
                *beat += 1;
            }
        }
    }
    let share = |n: usize| {
        if draws == 0 {
            0.0
        } else {
            n as f64 / draws as f64
        }
    };
    arms.iter()
        .zip(samples.iter_mut())
        .enumerate()
        .map(|(index, (arm, drawn))| {
            drawn.sort_by(f64::total_cmp);
            ArmPosterior {
                per_1000: if arm.views == 0 {
                    0.0
                } else {
                    arm.values.iter().sum::<f64>() * 1_000.0 / arm.views as f64
                },
                low: quantile(drawn, 0.025),
                high: quantile(drawn, 0.975),
                beat_control: (index != control).then(|| share(beats[index])),
                best: share(bests[index]),
            }
        })
        .collect()
}

/// Thompson sampling's traffic shares in basis points (summing to 10 000): each variant's
/// probability to be best, with `floor_percent` kept for every variant.
#[must_use]
pub fn shares(best: &[f64], floor_percent: u8) -> Vec<u32> {
    let n = best.len();
    if n == 0 {
        return vec![];
    }
    let floor = (f64::from(floor_percent) / 100.0).min(1.0 / n as f64);
    let rest = 1.0 - floor * n as f64;
    let total: f64 = best.iter().sum();
    let raw: Vec<f64> = best
        .iter()
        .map(|b| {
            let p = if total > 0.0 {
                b / total
            } else {
                1.0 / n as f64
            };
            (floor + rest * p) * 10_000.0
        })
        .collect();
    // Largest remainders, so the shares sum to exactly 10 000.
    let mut out: Vec<u32> = raw.iter().map(|r| r.floor() as u32).collect();
    let mut left = 10_000_u32.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| (raw[b] - raw[b].floor()).total_cmp(&(raw[a] - raw[a].floor())));
    for index in order.into_iter().cycle().take(n * 2) {
        if left == 0 {
            break;
        }
        out[index] += 1;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(views: u64, payments: usize, value: f64) -> Arm {
        Arm {
            views,
            values: vec![value; payments],
        }
    }

    #[test]
    fn a_clear_winner_is_found_and_a_tie_is_not() {
        let clear = posterior(
            &[arm(5_000, 50, 1_000.0), arm(5_000, 150, 1_000.0)],
            0,
            4_000,
            1,
        );
        assert!(clear[1].beat_control.unwrap() > 0.99, "{clear:?}");
        assert!(clear[1].best > 0.99);
        assert!((clear[0].per_1000 - 10_000.0).abs() < 1e-6);
        assert!(
            clear[1].low < 30_000.0 && 30_000.0 < clear[1].high,
            "{clear:?}"
        );
        let tie = posterior(
            &[arm(5_000, 100, 1_000.0), arm(5_000, 100, 1_000.0)],
            0,
            4_000,
            2,
        );
        let beat = tie[1].beat_control.unwrap();
        assert!((0.3..0.7).contains(&beat), "{tie:?}");
        // Fewer views, the same payments: the better value per view.
        let fewer = posterior(
            &[arm(5_000, 100, 1_000.0), arm(2_500, 100, 1_000.0)],
            0,
            4_000,
            3,
        );
        assert!(fewer[1].beat_control.unwrap() > 0.99);
        // Seeded: the same figures again.
        assert_eq!(
            posterior(&[arm(100, 3, 500.0), arm(100, 5, 900.0)], 0, 500, 9),
            posterior(&[arm(100, 3, 500.0), arm(100, 5, 900.0)], 0, 500, 9)
        );
        // Larger gifts weigh as much as more of them; many values take the normal path.
        let big = posterior(
            &[arm(50_000, 1_000, 1_000.0), arm(50_000, 1_000, 1_200.0)],
            0,
            2_000,
            4,
        );
        assert!(big[1].beat_control.unwrap() > 0.99, "{big:?}");
        // Nothing seen at all: no winner.
        let none = posterior(&[arm(0, 0, 0.0), arm(0, 0, 0.0)], 0, 1_000, 5);
        assert!((0.3..0.7).contains(&none[1].best), "{none:?}");
    }

    #[test]
    fn shares_keep_a_floor_and_sum_to_ten_thousand() {
        assert_eq!(shares(&[0.0, 1.0], 5), vec![500, 9_500]);
        assert_eq!(shares(&[0.5, 0.5], 5), vec![5_000, 5_000]);
        let three = shares(&[0.2, 0.3, 0.5], 10);
        assert_eq!(three.iter().sum::<u32>(), 10_000);
        assert!(three.iter().all(|&s| s >= 1_000), "{three:?}");
        assert_eq!(shares(&[1.0, 0.0, 0.0], 0), vec![10_000, 0, 0]);
        // A floor too large for the variants is capped at an equal split.
        assert_eq!(
            shares(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 20)
                .iter()
                .sum::<u32>(),
            10_000
        );
        assert_eq!(shares(&[0.3, 0.3, 0.4], 0).iter().sum::<u32>(), 10_000);
    }
}
