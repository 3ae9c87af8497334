//! Data parallelism inside one training step.
//!
//! burn's CPU backend runs every operation on the calling thread. A step can still use several
//! cores: the batch is cut into fixed row ranges (shards), each shard's loss is computed and
//! differentiated on its own thread against its own copy of the parameters (same values and
//! parameter ids, separate autodiff leaves, so the shards' graphs never merge under one lock),
//! and the per-parameter gradients are added in shard order before one optimizer step on the
//! model itself. Each shard's loss is its part of the full-batch loss (its sum divided by the
//! whole batch's denominator), so the shards' losses add up to the full-batch loss and their
//! gradients to its gradient; gradient clipping then applies to the sum.
//!
//! The split and the order of the sums depend only on the batch size and the number of shards,
//! never on timing: a run is reproducible for a seed and a shard count. Different shard counts
//! add the same numbers in another order, so they agree only to rounding.

use std::ops::Range;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;

/// Shards a training step is cut into unless told otherwise. A fixed number, not the machine's
/// cores: another shard count adds the same numbers in another order, so a seed gives the same
/// model on every machine only if the count does not follow the hardware (a research run
/// trained on a laptop replays on a 16-core server). Two use two cores fully; `--shards` asks for
/// more.
pub const DEFAULT_SHARDS: usize = 2;

/// The most threads used for work whose results do not depend on them (predictions).
pub const MAX_WORKERS: usize = 4;

/// Threads for work whose results do not depend on their number: the cores available, at most
/// [`MAX_WORKERS`].
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// The row ranges of `rows` rows cut into `shards` near-equal consecutive shards (fewer when
/// there are fewer rows than shards; none is empty).
pub fn shard_ranges(rows: usize, shards: usize) -> Vec<Range<usize>> {
    let n = shards.clamp(1, rows.max(1));
    (0..n).map(|i| i * rows / n..(i + 1) * rows / n).collect()
}

/// Computes `loss` for every shard input, the first on the calling thread against `model`,
/// every other one on its own thread against its own copy of `model`'s parameters. Returns the
/// values of the returned scalars and the gradients of the first scalar, each summed over the
/// shards in shard order. With one input, nothing but the calling thread is used.
pub(crate) fn sharded_gradients<M, S, F>(
    model: &M,
    inputs: Vec<S>,
    loss: F,
) -> (Vec<f32>, GradientsParams)
where
    M: Module,
    S: Send,
    F: Fn(&M, S) -> Vec<Tensor<1>> + Sync,
{
    crate::memory::keep_freed_buffers();
    let run = |m: &M, input: S| {
        let losses = loss(m, input);
        let values: Vec<f32> = losses
            .iter()
            .map(|t| t.clone().into_scalar::<f32>())
            .collect();
        let grads = match losses.into_iter().next() {
            Some(total) => GradientsParams::from_grads(total.backward(), m),
            None => GradientsParams::new(),
        };
        (values, grads)
    };
    if inputs.len() <= 1 {
        return match inputs.into_iter().next() {
            Some(input) => run(model, input),
            None => (Vec::new(), GradientsParams::new()),
        };
    }
    let results: Vec<(Vec<f32>, GradientsParams)> = std::thread::scope(|scope| {
        let run = &run;
        let mut inputs = inputs.into_iter();
        let first = inputs.next();
        let handles: Vec<_> = inputs
            .map(|input| {
                // Fresh autodiff leaves with the same values and parameter ids.
                let replica = model.valid().train();
                scope.spawn(move || run(&replica, input))
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len() + 1);
        if let Some(input) = first {
            out.push(run(model, input));
        }
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    });
    let mut values: Vec<f32> = Vec::new();
    let mut acc = GradientsAccumulator::<M>::new();
    for (v, g) in results {
        if values.is_empty() {
            values = v;
        } else {
            for (a, b) in values.iter_mut().zip(v) {
                *a += b;
            }
        }
        acc.accumulate(model, g);
    }
    (values, acc.grads())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_rows_once() {
        assert_eq!(shard_ranges(64, 2), vec![0..32, 32..64]);
        assert_eq!(shard_ranges(5, 3), vec![0..1, 1..3, 3..5]);
        assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
        assert_eq!(shard_ranges(7, 1), vec![0..7]);
        assert!((1..=MAX_WORKERS).contains(&workers()));
    }
}
