//! Criterion benchmarks of the graph drawing: layout and SVG rendering of 1,000 jobs with 2,000 edges.
//!
//! Run with `cargo bench --bench layout`. Two shapes, both built from a seeded generator so that every run measures
//! the same work: `random`, where a parent is any earlier job (long edges everywhere, the worst case for dummies and
//! crossings), and `local`, where a parent is one of the 30 jobs before (long pipelines, closer to real job graphs).

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration as StdDuration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kairos::graph::layout::{Activity, Node, NodeState, Outcome, SvgOptions, layout, render_svg};

const JOBS: usize = 1_000;
const EDGES: usize = 2_000;

/// SplitMix64: a tiny seeded generator, so that the graphs are the same on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn job_name(i: usize) -> String {
    format!("team-{}-job-{i:04}", i % 17)
}

/// `JOBS` jobs with mixed states and `EDGES` distinct edges, each from a job to a later one at most `reach` jobs
/// before it, so the graph is acyclic.
fn dag(reach: usize) -> (Vec<Node>, Vec<(String, String)>) {
    let mut rng = SplitMix64(0x6b61_6972_6f73);
    let nodes = (0..JOBS)
        .map(|i| Node {
            name: job_name(i),
            state: NodeState {
                outcome: [Outcome::Success, Outcome::Failure, Outcome::NeverRun][i % 3],
                activity: [
                    Activity::Idle,
                    Activity::Idle,
                    Activity::Running,
                    Activity::Queued,
                ][i % 4],
                disabled: i % 23 == 0,
            },
        })
        .collect();
    let mut seen = HashSet::with_capacity(EDGES);
    let mut edges = Vec::with_capacity(EDGES);
    while edges.len() < EDGES {
        let child = 1 + rng.below(JOBS - 1);
        let parent = child - 1 - rng.below(child.min(reach));
        if seen.insert((parent, child)) {
            edges.push((job_name(parent), job_name(child)));
        }
    }
    (nodes, edges)
}

fn bench_layout(c: &mut Criterion) {
    let mut group = c.benchmark_group("layout");
    group.sample_size(20);
    group.measurement_time(StdDuration::from_secs(4));
    group.throughput(Throughput::Elements((JOBS + EDGES) as u64));
    let opts = SvgOptions::default();
    for (shape, reach) in [("random", JOBS), ("local", 30)] {
        let (nodes, edges) = dag(reach);
        let drawn = layout(&nodes, &edges).expect("an acyclic graph");
        let svg = render_svg(&drawn, &opts);
        let points: usize = drawn.edges.iter().map(|e| e.points.len()).sum();
        eprintln!(
            "layout/{shape}: {:.0}x{:.0} px, {points} edge points, svg {} bytes",
            drawn.width,
            drawn.height,
            svg.len()
        );
        group.bench_with_input(
            BenchmarkId::new("layout", shape),
            &(&nodes, &edges),
            |b, (nodes, edges)| b.iter(|| layout(black_box(nodes), black_box(edges))),
        );
        group.bench_with_input(BenchmarkId::new("render_svg", shape), &drawn, |b, drawn| {
            b.iter(|| render_svg(black_box(drawn), black_box(&opts)))
        });
        group.bench_with_input(
            BenchmarkId::new("both", shape),
            &(&nodes, &edges),
            |b, (nodes, edges)| {
                b.iter(|| {
                    render_svg(
                        &layout(black_box(nodes), black_box(edges)).unwrap(),
                        black_box(&opts),
                    )
                })
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(StdDuration::from_millis(500))
        .measurement_time(StdDuration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_layout
}
criterion_main!(benches);
