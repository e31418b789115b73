//! `finalize`: turns an accumulator into the paper's per-class metrics, the
//! overall scores and the many / medium / few groups.

use crate::hessian::{check, HessianCheck};
use crate::memory::{collect, copy, reserve, zeros};
use crate::pool::resolve_threads;
use crate::stats::{EceBin, LogitStats, Moments};
use crate::{Error, Result};

/// Per-class arrays; NaN where a class has no rows of the kind needed.
#[derive(Clone, Debug)]
pub struct PerClass {
    pub pos_count: Vec<u64>,
    pub neg_count: Vec<u64>,
    pub pos_mean: Vec<f64>,
    pub neg_mean: Vec<f64>,
    pub pos_std: Vec<f64>,
    pub neg_std: Vec<f64>,
    /// Standard deviation of the whole column (positives and negatives).
    pub std: Vec<f64>,
    /// Logits Magnitude L_i = pos_mean - neg_mean.
    pub magnitude: Vec<f64>,
    /// Regularized Standard Deviation r_i = pos_std / L_i (the paper's default).
    pub rstd: Vec<f64>,
    /// neg_std / L_i.
    pub rstd_neg: Vec<f64>,
    /// std / L_i.
    pub rstd_all: Vec<f64>,
    pub accuracy: Vec<f64>,
    pub predicted_count: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct Overall {
    pub rows: u64,
    pub omitted: u64,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub nll: f64,
    pub ece: f64,
}

/// One of many / medium / few. Means skip classes whose value is undefined;
/// `None` when no class of the group has one.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: &'static str,
    pub classes: usize,
    pub accuracy: Option<f64>,
    pub mean_magnitude: Option<f64>,
    pub mean_rstd: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub num_classes: usize,
    pub per_class: PerClass,
    pub overall: Overall,
    /// many, medium, few; present when train counts were given.
    pub groups: Option<Vec<Group>>,
    pub hessian: Option<HessianCheck>,
    pub ece_bins: Vec<EceBin>,
}

/// The shot groups of long-tailed benchmarks, in order, and their thresholds: many has
/// more than MANY_ABOVE training images, medium FEW_BELOW..=MANY_ABOVE, few fewer than
/// FEW_BELOW. The one definition of the rule; Python reads these through `lort._core`.
pub const GROUP_NAMES: [&str; 3] = ["many", "medium", "few"];
pub const MANY_ABOVE: u64 = 100;
pub const FEW_BELOW: u64 = 20;

/// The index into [`GROUP_NAMES`] of a class with `train_count` training images.
pub fn shot_group(train_count: u64) -> usize {
    match train_count {
        c if c > MANY_ABOVE => 0,
        c if c >= FEW_BELOW => 1,
        _ => 2,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

fn nan_mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

impl LogitStats {
    /// `finalize_with_threads` on the default thread count (`resolve_threads(None)`).
    pub fn finalize(&self, train_counts: Option<&[u64]>) -> Result<Report> {
        self.finalize_with_threads(train_counts, resolve_threads(None).unwrap_or(1))
    }

    /// The report; hessian='exact' decomposes its K x K matrix on `threads`.
    pub fn finalize_with_threads(
        &self,
        train_counts: Option<&[u64]>,
        threads: usize,
    ) -> Result<Report> {
        let k = self.k;
        if let Some(tc) = train_counts {
            if tc.len() != k {
                return Err(Error::Input(format!(
                    "train_counts has {} entries but there are {k} classes; give one count per class",
                    tc.len()
                )));
            }
        }
        // The report's arrays (about 110 bytes per class) are allocated fallibly,
        // like the state they are computed from.
        let what = "the report's per-class arrays";
        let per_class = |f: &dyn Fn(usize) -> f64| collect((0..k).map(f), what);
        let (pos, neg) = (&self.pos, &self.neg);
        let pos_mean = per_class(&|j| pos.mean_or_nan(j))?;
        let neg_mean = per_class(&|j| neg.mean_or_nan(j))?;
        let pos_std = per_class(&|j| pos.std(j))?;
        let neg_std = per_class(&|j| neg.std(j))?;
        let mut std = zeros::<f64>(k, what)?;
        for (j, sd) in std.iter_mut().enumerate() {
            let mut all = Moments::new(1)?;
            all.merge_one(0, pos.n[j], pos.mean[j], pos.m2[j]);
            all.merge_one(0, neg.n[j], neg.mean[j], neg.m2[j]);
            *sd = all.std(0);
        }
        let magnitude = per_class(&|j| pos_mean[j] - neg_mean[j])?;
        let over_l = |s: &[f64]| per_class(&|j| ratio(s[j], magnitude[j]));
        let accuracy = per_class(&|j| ratio(self.correct[j] as f64, pos.n[j] as f64))?;

        let rows = self.rows as f64;
        let correct: u64 = self.correct.iter().sum();
        let ece = self
            .ece
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.correct as f64 - b.confidence).abs() / rows)
            .sum();
        let overall = Overall {
            rows: self.rows,
            omitted: self.omitted,
            accuracy: ratio(correct as f64, rows),
            balanced_accuracy: nan_mean(accuracy.iter().copied()).unwrap_or(f64::NAN),
            nll: ratio(self.nll_sum, rows),
            ece: if self.rows == 0 { f64::NAN } else { ece },
        };

        let per_class = PerClass {
            pos_count: copy(&pos.n, what)?,
            neg_count: copy(&neg.n, what)?,
            rstd: over_l(&pos_std)?,
            rstd_neg: over_l(&neg_std)?,
            rstd_all: over_l(&std)?,
            pos_mean,
            neg_mean,
            pos_std,
            neg_std,
            std,
            magnitude,
            accuracy,
            predicted_count: copy(&self.predicted, what)?,
        };
        let groups = match train_counts {
            None => None,
            Some(tc) => {
                let mut members = Vec::new();
                reserve(&mut members, k, what)?;
                let mut groups = Vec::with_capacity(GROUP_NAMES.len());
                for (g, &name) in GROUP_NAMES.iter().enumerate() {
                    members.clear();
                    members.extend((0..k).filter(|&j| shot_group(tc[j]) == g));
                    let mean_of = |v: &[f64]| nan_mean(members.iter().map(|&j| v[j]));
                    groups.push(Group {
                        name,
                        classes: members.len(),
                        accuracy: mean_of(&per_class.accuracy),
                        mean_magnitude: mean_of(&per_class.magnitude),
                        mean_rstd: mean_of(&per_class.rstd),
                    });
                }
                Some(groups)
            }
        };
        Ok(Report {
            num_classes: k,
            per_class,
            overall,
            groups,
            hessian: check(&self.hessian, k, self.rows, threads)?,
            ece_bins: self.ece.to_vec(),
        })
    }
}
