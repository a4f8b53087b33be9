//! Tests for the layered drawing: tables for layering, errors, labels and the SVG, and proptest properties that
//! check the geometry of random DAGs (no edge through a box, no overlapping boxes, parents left of children).

use super::*;
use proptest::prelude::*;

fn job(name: &str) -> Node {
    Node {
        name: name.to_owned(),
        state: NodeState::default(),
    }
}

fn jobs(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| job(n)).collect()
}

fn links(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect()
}

fn lay(names: &[&str], pairs: &[(&str, &str)]) -> Layout {
    let layout = layout(&jobs(names), &links(pairs)).expect("a valid DAG");
    check_geometry(&layout);
    layout
}

fn node<'a>(layout: &'a Layout, name: &str) -> &'a PlacedNode {
    layout
        .nodes
        .iter()
        .find(|n| n.name == name)
        .expect("a placed job")
}

/// Tolerance for touching: a line may run along a box's border, and boxes may touch, but not overlap.
const EPS: f64 = 0.5;

fn overlaps(a: &Rect, b: &Rect) -> bool {
    a.x < b.right() - EPS && b.x < a.right() - EPS && a.y < b.bottom() - EPS && b.y < a.bottom() - EPS
}

/// Whether the segment a-b passes through the interior of `r` (Liang–Barsky clipping against `r` shrunk by EPS).
fn segment_hits(a: Point, b: Point, r: &Rect) -> bool {
    let (left, right, top, bottom) = (r.x + EPS, r.right() - EPS, r.y + EPS, r.bottom() - EPS);
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    for (p, q) in [
        (-dx, a.x - left),
        (dx, right - a.x),
        (-dy, a.y - top),
        (dy, bottom - a.y),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
            if t0 > t1 {
                return false;
            }
        }
    }
    true
}

/// Every geometric promise of a layout, with messages that name the culprits.
fn check_geometry(layout: &Layout) {
    let nodes = &layout.nodes;
    for (i, a) in nodes.iter().enumerate() {
        let r = a.rect;
        assert!(
            r.x >= 0.0 && r.y >= 0.0 && r.right() <= layout.width && r.bottom() <= layout.height,
            "{} at {r:?} is outside {}x{}",
            a.name,
            layout.width,
            layout.height
        );
        for b in &nodes[i + 1..] {
            assert!(
                !overlaps(&a.rect, &b.rect),
                "{} {:?} overlaps {} {:?}",
                a.name,
                a.rect,
                b.name,
                b.rect
            );
        }
    }
    for edge in &layout.edges {
        let (parent, child) = (&nodes[edge.parent], &nodes[edge.child]);
        let what = format!("edge {} -> {}", parent.name, child.name);
        let (lp, lc) = (parent.layer.expect(&what), child.layer.expect(&what));
        assert!(lp < lc, "{what}: layers {lp} and {lc}");
        assert!(
            parent.rect.right() < child.rect.x,
            "{what}: parent is not left of child"
        );
        let first = edge.points[0];
        let last = edge.points[edge.points.len() - 1];
        let near = |a: Point, x: f64, y: f64| (a.x - x).abs() < 1e-6 && (a.y - y).abs() < 1e-6;
        assert!(
            near(first, parent.rect.right(), parent.rect.center_y()),
            "{what}: starts at {first:?}"
        );
        assert!(
            near(last, child.rect.x, child.rect.center_y()),
            "{what}: ends at {last:?}"
        );
        for pair in edge.points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(a.x <= b.x, "{what}: goes backwards at {a:?} -> {b:?}");
            for (k, other) in nodes.iter().enumerate() {
                if k != edge.parent && k != edge.child {
                    assert!(
                        !segment_hits(a, b, &other.rect),
                        "{what}: {a:?} -> {b:?} crosses {}",
                        other.name
                    );
                }
            }
            // A sloped segment is drawn as a curve inside the segment's bounding box, which must avoid every box
            // including its own ends'.
            if a.y != b.y {
                let hull = Rect {
                    x: a.x,
                    y: a.y.min(b.y),
                    width: b.x - a.x,
                    height: (b.y - a.y).abs(),
                };
                for other in nodes {
                    assert!(
                        !overlaps(&hull, &other.rect),
                        "{what}: curve {a:?} -> {b:?} crosses {}",
                        other.name
                    );
                }
            }
        }
    }
}

#[test]
fn a_chain_is_one_straight_row() {
    let layout = lay(&["a", "b", "c"], &[("a", "b"), ("b", "c")]);
    let layers: Vec<_> = layout.nodes.iter().map(|n| n.layer).collect();
    assert_eq!(layers, [Some(0), Some(1), Some(2)]);
    let ys: Vec<_> = layout.nodes.iter().map(|n| n.rect.y).collect();
    assert!(ys.iter().all(|&y| y == ys[0]), "{ys:?}");
    assert!(layout.unconnected.is_none());
}

#[test]
fn layers_table() {
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, usize)],
    );
    let rows: &[Row] = &[
        (
            "fan-out",
            &["a", "b", "c", "d"],
            &[("a", "b"), ("a", "c"), ("a", "d")],
            &[("a", 0), ("d", 1)],
        ),
        (
            "fan-in",
            &["a", "b", "c", "d"],
            &[("a", "d"), ("b", "d"), ("c", "d")],
            &[("a", 0), ("d", 1)],
        ),
        (
            "diamond",
            &["a", "b", "c", "d"],
            &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
            &[("a", 0), ("b", 1), ("c", 1), ("d", 2)],
        ),
        (
            "longest path wins",
            &["a", "b", "c", "d"],
            &[("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")],
            &[("a", 0), ("d", 3)],
        ),
        (
            "a root is pulled next to its earliest child",
            &["a", "b", "c", "r"],
            &[("a", "b"), ("b", "c"), ("r", "c")],
            &[("a", 0), ("c", 2), ("r", 1)],
        ),
        (
            "a short chain feeding a deep job slides right",
            &["a", "b", "c", "d", "r", "x"],
            &[("a", "b"), ("b", "c"), ("c", "d"), ("r", "x"), ("x", "d")],
            &[("a", 0), ("d", 3), ("x", 2), ("r", 1)],
        ),
        (
            "a group feeding a deep job slides right as a whole",
            &["a", "b", "c", "d", "p", "q", "x"],
            &[
                ("a", "b"),
                ("b", "c"),
                ("c", "d"),
                ("p", "x"),
                ("q", "x"),
                ("x", "d"),
            ],
            &[("x", 2), ("p", 1), ("q", 1), ("d", 3)],
        ),
        (
            "a job between a shallow and a deep branch stays where its edges are shortest",
            &["a", "b", "c", "d", "e", "x", "y"],
            &[
                ("a", "b"),
                ("b", "c"),
                ("c", "d"),
                ("d", "e"),
                ("a", "x"),
                ("x", "y"),
                ("x", "e"),
            ],
            &[("a", 0), ("x", 1), ("y", 2), ("e", 4)],
        ),
        (
            "input order need not be topological",
            &["d", "c", "b", "a"],
            &[("a", "b"), ("b", "c"), ("c", "d")],
            &[("a", 0), ("b", 1), ("c", 2), ("d", 3)],
        ),
    ];
    for (what, names, pairs, expected) in rows {
        let layout = lay(names, pairs);
        for (name, layer) in *expected {
            assert_eq!(node(&layout, name).layer, Some(*layer), "{what}: {name}");
        }
    }
}

#[test]
fn long_edges_bend_through_one_point_pair_per_skipped_layer() {
    let layout = lay(
        &["a", "b", "c", "d"],
        &[("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")],
    );
    let long = layout
        .edges
        .iter()
        .find(|e| e.parent == 0 && e.child == 3)
        .unwrap();
    // Two dummies (layers 1 and 2), each entered and left, between the two ends; stubs only where boxes are
    // narrower than their column.
    let stubs = long.points.len() - 2 - 2 * 2;
    assert!(stubs <= 2, "{:?}", long.points);
}

#[test]
fn errors_table() {
    type Row = (&'static str, Vec<Node>, Vec<(String, String)>, Error);
    let rows: Vec<Row> = vec![
        (
            "duplicate job",
            jobs(&["a", "b", "a"]),
            links(&[]),
            Error::DuplicateJob("a".into()),
        ),
        (
            "unknown child",
            jobs(&["a"]),
            links(&[("a", "x")]),
            Error::UnknownJob {
                parent: "a".into(),
                child: "x".into(),
            },
        ),
        (
            "unknown parent",
            jobs(&["a"]),
            links(&[("x", "a")]),
            Error::UnknownJob {
                parent: "x".into(),
                child: "a".into(),
            },
        ),
        (
            "self loop",
            jobs(&["a"]),
            links(&[("a", "a")]),
            Error::Cycle("a".into()),
        ),
        (
            "cycle downstream of a root",
            jobs(&["r", "a", "b", "c", "z"]),
            links(&[("r", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "z")]),
            // z waits on the cycle but is not on it; the error names a job that is.
            Error::Cycle("c".into()),
        ),
    ];
    for (what, nodes, edges, expected) in rows {
        let got = layout(&nodes, &edges).expect_err(what);
        match (&got, &expected) {
            (Error::Cycle(on), Error::Cycle(_)) => {
                assert!(["a", "b", "c"].contains(&on.as_str()), "{what}: {got}")
            }
            _ => assert_eq!(got, expected, "{what}"),
        }
    }
}

#[test]
fn duplicate_edges_are_drawn_once() {
    let layout = lay(&["a", "b"], &[("a", "b"), ("a", "b")]);
    assert_eq!(layout.edges.len(), 1);
}

#[test]
fn empty_input_is_an_empty_picture() {
    let layout = lay(&[], &[]);
    assert!(layout.nodes.is_empty() && layout.edges.is_empty() && layout.unconnected.is_none());
    let svg = render_svg(&layout, &SvgOptions::default());
    assert_balanced(&svg);
}

#[test]
fn unconnected_jobs_form_a_compact_grid_below_the_rest() {
    let names: Vec<String> = (0..100).map(|i| format!("lonely-{i:03}")).collect();
    let mut all: Vec<&str> = vec!["a", "b", "c"];
    all.extend(names.iter().map(String::as_str));
    let layout = lay(&all, &[("a", "b"), ("b", "c")]);
    let grid = layout.unconnected.expect("a grid");
    let connected_bottom = ["a", "b", "c"]
        .iter()
        .map(|n| node(&layout, n).rect.bottom())
        .fold(0.0, f64::max);
    assert!(grid.y > connected_bottom);
    for name in &names {
        let n = node(&layout, name);
        assert_eq!(n.layer, None);
        assert!(n.rect.x >= grid.x && n.rect.right() <= grid.right() + EPS);
        assert!(n.rect.y >= grid.y && n.rect.bottom() <= grid.bottom() + EPS);
    }
    // Not one tall column: a landscape block.
    assert!(grid.width > grid.height, "{grid:?}");
    // Row by row in input order.
    assert!(node(&layout, "lonely-000").rect.x < node(&layout, "lonely-001").rect.x);

    let alone = lay(&names.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(
        alone.width > alone.height && alone.height < 1000.0,
        "{}x{}",
        alone.width,
        alone.height
    );
}

#[test]
fn separate_parts_are_packed_side_by_side() {
    // Forty two-job pipelines would be a 40-row column if layered together.
    let names: Vec<String> = (0..40).flat_map(|i| [format!("p{i}"), format!("c{i}")]).collect();
    let pairs: Vec<(String, String)> = (0..40).map(|i| (format!("p{i}"), format!("c{i}"))).collect();
    let nodes: Vec<Node> = names.iter().map(|n| job(n)).collect();
    let layout = layout(&nodes, &pairs).unwrap();
    check_geometry(&layout);
    assert!(layout.height < layout.width, "{}x{}", layout.width, layout.height);
}

#[test]
fn long_names_are_truncated_with_an_ellipsis() {
    let long = "a-very-long-job-name-that-goes-on-and-on-forever";
    let layout = lay(&[long, "b"], &[(long, "b")]);
    let n = node(&layout, long);
    assert!(
        n.label.ends_with('…') && n.label.chars().count() < long.chars().count(),
        "{}",
        n.label
    );
    assert_eq!(n.rect.width, 240.0);
    let short = node(&layout, "b");
    assert_eq!(short.label, "b");
    assert!(short.rect.width < 100.0);
    let svg = render_svg(&layout, &SvgOptions::default());
    assert!(
        svg.contains(&format!("<title>{long}\n")),
        "the full name is in the tooltip"
    );
}

#[test]
fn state_classes_table() {
    let state = |outcome, activity, disabled| NodeState {
        outcome,
        activity,
        disabled,
    };
    let rows = [
        (state(Outcome::NeverRun, Activity::Idle, false), "never-run"),
        (state(Outcome::Success, Activity::Idle, false), "success"),
        (state(Outcome::Failure, Activity::Idle, false), "failure"),
        (state(Outcome::Failure, Activity::Running, false), "running"),
        (state(Outcome::Success, Activity::Queued, false), "queued"),
        (state(Outcome::Success, Activity::Idle, true), "disabled"),
        (state(Outcome::Failure, Activity::Running, true), "running"),
    ];
    for (s, class) in rows {
        assert_eq!(s.class(), class, "{s:?}");
    }
    assert_eq!(
        state(Outcome::Failure, Activity::Queued, true).to_string(),
        "last run failed, queued, disabled"
    );
}

/// Check that tags nest properly and that every `&` starts an entity; enough to catch broken escaping.
fn assert_balanced(svg: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare & in {text:?}"
            );
        }
        let close = rest[open..].find('>').expect("an unclosed tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "a < inside tag {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "closing {name}");
        } else if !tag.ends_with('/') {
            let name = tag.split([' ', '\n']).next().unwrap();
            stack.push(name);
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(rest.trim(), "");
}

#[test]
fn svg_is_well_formed_and_escaped() {
    let mut nodes = jobs(&["a&b<c>", "plain", "ünï"]);
    nodes[0].state.outcome = Outcome::Failure;
    nodes[1].state.activity = Activity::Running;
    let edges = links(&[("a&b<c>", "plain")]);
    let layout = layout(&nodes, &edges).unwrap();
    let opts = SvgOptions {
        link_prefix: "/jobs?x=1&name=".to_owned(),
        highlight: Some("plain".to_owned()),
        legend: true,
    };
    let svg = render_svg(&layout, &opts);
    assert_balanced(&svg);
    assert!(
        svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" "#),
        "{svg}"
    );
    assert!(svg.contains("viewBox=\"0 0 "));
    assert!(svg.contains("@media (prefers-color-scheme:dark)"));
    assert!(!svg.contains("a&b"));
    assert!(svg.contains(">a&amp;b&lt;c&gt;</text>"));
    assert!(svg.contains(r#"<a href="/jobs?x=1&amp;name=a%26b%3Cc%3E">"#));
    assert!(svg.contains(r#"<a href="/jobs?x=1&amp;name=%C3%BCn%C3%AF">"#));
    assert!(svg.contains(r#"<g class="node state-failure">"#));
    assert!(svg.contains(r#"<g class="node state-running highlight">"#));
    assert_eq!(svg.matches(" highlight\"").count(), 1);
    assert_eq!(svg.matches("<a href=").count(), 3);
    assert_eq!(svg.matches(r#"<path class="edge hl""#).count(), 1);
    assert!(svg.contains("Jobs without dependencies"));

    let plain = render_svg(
        &layout,
        &SvgOptions {
            legend: false,
            ..SvgOptions::default()
        },
    );
    assert_balanced(&plain);
    assert!(!plain.contains("highlight\""));
    assert!(!plain.contains("class=\"legend\""));
    assert!(plain.contains(r#"<a href="/jobs/a%26b%3Cc%3E">"#));
}

#[test]
fn coordinates_are_compact_numbers() {
    assert_eq!(Num(12.0).to_string(), "12");
    assert_eq!(Num(12.04).to_string(), "12");
    assert_eq!(Num(12.25).to_string(), "12.3");
    assert_eq!(Num(-0.5).to_string(), "-0.5");
    assert_eq!(Num(-0.01).to_string(), "0");
}

#[test]
fn pool_adjacent_violators_fit_table() {
    type Row<'a> = (&'a [f64], &'a [f64], &'a [f64], &'a [f64]);
    let rows: &[Row] = &[
        // Already far enough apart: stays.
        (&[0.0, 50.0], &[1.0, 1.0], &[10.0], &[0.0, 50.0]),
        // Both want the same place: split evenly around it.
        (&[20.0, 20.0], &[1.0, 1.0], &[10.0], &[15.0, 25.0]),
        // A heavy item barely moves.
        (&[20.0, 20.0], &[3.0, 1.0], &[8.0], &[18.0, 26.0]),
        // Out of order wishes collapse into one block.
        (
            &[30.0, 10.0, 20.0],
            &[1.0, 1.0, 1.0],
            &[10.0, 10.0],
            &[10.0, 20.0, 30.0],
        ),
    ];
    let mut out = Vec::new();
    for (want, weight, gap, expected) in rows {
        fit_in_order(want, weight, gap, &mut out);
        assert_eq!(&out, expected, "{want:?}");
    }
}

/// A -> B -> C -> A, plus D -> A, and E alone, F and G a pair.
fn sample_graph() -> JobGraph {
    let mut g = JobGraph::new();
    for (job, parents) in [
        ("a", &[][..]),
        ("d", &[][..]),
        ("b", &["a"][..]),
        ("c", &["b", "d"][..]),
        ("e", &[][..]),
        ("f", &[][..]),
        ("g", &["f"][..]),
        ("h", &["c"][..]),
        ("i", &["b"][..]),
    ] {
        let parents: Vec<String> = parents.iter().map(|p: &&str| (*p).to_owned()).collect();
        g.set_parents(job, &parents).unwrap();
    }
    g
}

#[test]
fn neighbourhood_is_the_job_its_ancestors_and_its_descendants() {
    let g = sample_graph();
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<String>>()
    };
    let rows: &[(&str, &[&str])] = &[
        // b's sibling branch through d is an ancestor of c, not of b.
        ("b", &["a", "b", "c", "h", "i"]),
        ("c", &["a", "b", "c", "d", "h"]),
        ("a", &["a", "b", "c", "h", "i"]),
        ("d", &["c", "d", "h"]),
        ("e", &["e"]),
        ("g", &["f", "g"]),
        ("nope", &[]),
    ];
    for (job, expected) in rows {
        assert_eq!(neighbourhood(&g, job), set(expected), "{job}");
    }
}

#[test]
fn graph_input_keeps_order_and_filters_both_ends() {
    let g = sample_graph();
    let keep = neighbourhood(&g, "d");
    let (nodes, edges) = graph_input(
        &g,
        |n| keep.contains(n),
        |n| NodeState {
            disabled: n == "h",
            ..NodeState::default()
        },
    );
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["d", "c", "h"]);
    assert!(nodes[2].state.disabled && !nodes[0].state.disabled);
    assert_eq!(edges, links(&[("d", "c"), ("c", "h")]));

    let (all, all_edges) = graph_input(&g, |_| true, |_| NodeState::default());
    assert_eq!(all.len(), 9);
    assert_eq!(all_edges, g.edges());
    let layout = layout(&all, &all_edges).unwrap();
    check_geometry(&layout);
    assert_eq!(node(&layout, "e").layer, None);
}

/// A small deterministic generator, so that the big cases are the same on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// `jobs` jobs and `edges` distinct edges, each from a job to a later one at most `reach` jobs on.
fn random_dag(jobs: usize, edges: usize, reach: usize, seed: u64) -> (Vec<Node>, Vec<(String, String)>) {
    let mut rng = SplitMix64(seed);
    let name = |i: usize| format!("job-{i:04}{}", "-x".repeat(i % 7));
    let nodes: Vec<Node> = (0..jobs)
        .map(|i| Node {
            name: name(i),
            state: NodeState {
                outcome: [Outcome::NeverRun, Outcome::Success, Outcome::Failure][i % 3],
                ..NodeState::default()
            },
        })
        .collect();
    let mut seen = HashSet::new();
    let mut pairs = Vec::new();
    while pairs.len() < edges {
        let child = 1 + rng.below(jobs - 1);
        let parent = child - 1 - rng.below(child.min(reach));
        if seen.insert((parent, child)) {
            pairs.push((name(parent), name(child)));
        }
    }
    (nodes, pairs)
}

#[test]
fn a_thousand_jobs_and_two_thousand_edges_lay_out() {
    for reach in [1_000, 30] {
        let (nodes, edges) = random_dag(1_000, 2_000, reach, 42);
        let layout = layout(&nodes, &edges).unwrap();
        assert_eq!(layout.nodes.len(), 1_000);
        assert_eq!(layout.edges.len(), 2_000);
        for edge in &layout.edges {
            assert!(layout.nodes[edge.parent].layer < layout.nodes[edge.child].layer);
        }
        // No overlaps, checked per column of equal x to stay fast in a debug build.
        let mut rects: Vec<Rect> = layout.nodes.iter().map(|n| n.rect).collect();
        rects.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.y.total_cmp(&b.y)));
        for pair in rects.windows(2) {
            assert!(!overlaps(&pair[0], &pair[1]), "{pair:?}");
        }
        let svg = render_svg(&layout, &SvgOptions::default());
        assert_eq!(svg.matches("<a href=").count(), 1_000);
    }
}

/// About thirty jobs of a small shop: two pipelines with fan-out and fan-in, a chain, a pair, and some loners.
fn sample() -> (Vec<Node>, Vec<(String, String)>) {
    let rows: &[(&str, Outcome, Activity, bool, &[&str])] = &[
        ("ingest-orders", Outcome::Success, Activity::Idle, false, &[]),
        ("ingest-customers", Outcome::Success, Activity::Idle, false, &[]),
        ("ingest-inventory", Outcome::Failure, Activity::Idle, false, &[]),
        (
            "clean-orders",
            Outcome::Success,
            Activity::Idle,
            false,
            &["ingest-orders"],
        ),
        (
            "clean-customers",
            Outcome::Success,
            Activity::Running,
            false,
            &["ingest-customers"],
        ),
        (
            "join-orders-customers",
            Outcome::Success,
            Activity::Queued,
            false,
            &["clean-orders", "clean-customers"],
        ),
        (
            "stock-levels",
            Outcome::NeverRun,
            Activity::Idle,
            false,
            &["ingest-inventory"],
        ),
        (
            "daily-revenue",
            Outcome::Success,
            Activity::Idle,
            false,
            &["join-orders-customers"],
        ),
        (
            "customer-lifetime-value",
            Outcome::Failure,
            Activity::Idle,
            false,
            &["join-orders-customers"],
        ),
        (
            "reorder-suggestions",
            Outcome::NeverRun,
            Activity::Idle,
            false,
            &["stock-levels", "daily-revenue"],
        ),
        (
            "exec-dashboard",
            Outcome::Success,
            Activity::Idle,
            false,
            &["daily-revenue", "customer-lifetime-value"],
        ),
        (
            "email-finance-report-to-the-board-of-directors",
            Outcome::Success,
            Activity::Idle,
            false,
            &["daily-revenue"],
        ),
        (
            "archive-raw-orders",
            Outcome::Success,
            Activity::Idle,
            true,
            &["ingest-orders"],
        ),
        (
            "warehouse-vacuum",
            Outcome::Success,
            Activity::Idle,
            false,
            &["exec-dashboard", "reorder-suggestions"],
        ),
        ("backup-db", Outcome::Success, Activity::Idle, false, &[]),
        (
            "verify-backup",
            Outcome::Success,
            Activity::Running,
            false,
            &["backup-db"],
        ),
        (
            "ship-backup-offsite",
            Outcome::NeverRun,
            Activity::Idle,
            false,
            &["verify-backup"],
        ),
        (
            "prune-old-backups",
            Outcome::NeverRun,
            Activity::Idle,
            false,
            &["ship-backup-offsite"],
        ),
        (
            "build-search-index",
            Outcome::Failure,
            Activity::Queued,
            false,
            &[],
        ),
        (
            "warm-search-cache",
            Outcome::NeverRun,
            Activity::Idle,
            false,
            &["build-search-index"],
        ),
        ("rotate-logs", Outcome::Success, Activity::Idle, false, &[]),
        ("renew-certs", Outcome::Success, Activity::Idle, false, &[]),
        ("send-newsletter", Outcome::Failure, Activity::Idle, false, &[]),
        ("cleanup-tmp", Outcome::Success, Activity::Running, false, &[]),
        ("sync-ldap", Outcome::NeverRun, Activity::Idle, true, &[]),
        ("r&d-<experiment>", Outcome::Success, Activity::Idle, false, &[]),
        ("heartbeat", Outcome::Success, Activity::Idle, false, &[]),
        ("gc-docker-images", Outcome::Success, Activity::Queued, false, &[]),
        (
            "refresh-exchange-rates",
            Outcome::Success,
            Activity::Idle,
            false,
            &[],
        ),
        ("compact-metrics", Outcome::Failure, Activity::Idle, false, &[]),
    ];
    let nodes = rows
        .iter()
        .map(|&(name, outcome, activity, disabled, _)| Node {
            name: name.to_owned(),
            state: NodeState {
                outcome,
                activity,
                disabled,
            },
        })
        .collect();
    let edges = rows
        .iter()
        .flat_map(|&(name, _, _, _, parents)| parents.iter().map(move |p| ((*p).to_owned(), name.to_owned())))
        .collect();
    (nodes, edges)
}

#[test]
fn output_is_deterministic() {
    let (nodes, edges) = sample();
    let first = layout(&nodes, &edges).unwrap();
    check_geometry(&first);
    let opts = SvgOptions {
        highlight: Some("daily-revenue".to_owned()),
        ..SvgOptions::default()
    };
    let svg = render_svg(&first, &opts);
    assert_balanced(&svg);
    for _ in 0..3 {
        let again = layout(&nodes, &edges).unwrap();
        assert_eq!(again, first);
        assert_eq!(render_svg(&again, &opts), svg);
    }
}

/// Random DAGs: `n` jobs with names of varied lengths (some truncated), listed in a shuffled order, and edges from a
/// lower to a higher job number, so the graph is acyclic but the input order is not topological.
fn arb_dag() -> impl Strategy<Value = (Vec<Node>, Vec<(String, String)>)> {
    (1usize..60).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec((0..n, 0..n), 0..n * 2),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
        )
            .prop_map(|(n, pairs, order)| {
                let name = |i: usize| format!("j{i}{}", "-long".repeat(i * 7 % 9));
                let nodes = order.iter().map(|&i| job(&name(i))).collect::<Vec<_>>();
                debug_assert_eq!(nodes.len(), n);
                let edges = pairs
                    .into_iter()
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| (name(a.min(b)), name(a.max(b))))
                    .collect();
                (nodes, edges)
            })
    })
}

/// Connected DAGs of up to 6 jobs: a random spanning tree plus random extra edges, every edge oriented by a random
/// topological order. Returns that order and the edges.
fn arb_connected_dag() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, usize)>)> {
    (2usize..=6).prop_flat_map(|n| {
        (
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            prop::collection::vec(any::<prop::sample::Index>(), n - 1),
            prop::collection::vec((0..n, 0..n), 0..n * 2),
        )
            .prop_map(move |(rank_of, tree, extra)| {
                let tree = tree.iter().enumerate().map(|(i, j)| (i + 1, j.index(i + 1)));
                let mut edges: Vec<(usize, usize)> = Vec::new();
                for (a, b) in tree.chain(extra) {
                    let edge = if rank_of[a] < rank_of[b] { (a, b) } else { (b, a) };
                    if a != b && !edges.contains(&edge) {
                        edges.push(edge);
                    }
                }
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by_key(|&v| rank_of[v]);
                (order, edges)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn layering_is_feasible_and_as_short_as_brute_force((order, edges) in arb_connected_dag()) {
        let n = order.len();
        let layers = assign_layers(&order, &edges);
        let length = |l: &[usize]| edges.iter().map(|&(p, c)| l[c] as i64 - l[p] as i64).sum::<i64>();
        for &(p, c) in &edges {
            prop_assert!(layers[p] < layers[c], "{:?} with {:?}", layers, edges);
        }
        prop_assert_eq!(layers.iter().min(), Some(&0));
        // Brute force over every layering with layers below n (an optimal one never needs more).
        let mut best = i64::MAX;
        let mut l = vec![0usize; n];
        'all: loop {
            if edges.iter().all(|&(p, c)| l[p] < l[c]) {
                best = best.min(length(&l));
            }
            for slot in l.iter_mut() {
                *slot += 1;
                if *slot < n {
                    continue 'all;
                }
                *slot = 0;
            }
            break;
        }
        prop_assert_eq!(length(&layers), best, "{:?} with {:?}", layers, edges);
    }

    #[test]
    fn random_dags_have_clean_geometry((nodes, edges) in arb_dag()) {
        let first = layout(&nodes, &edges).unwrap();
        check_geometry(&first);
        prop_assert_eq!(first.nodes.len(), nodes.len());
        for (placed, node) in first.nodes.iter().zip(&nodes) {
            prop_assert_eq!(&placed.name, &node.name);
            let has_edge = first.edges.iter().any(|e| nodes[e.parent].name == node.name || nodes[e.child].name == node.name);
            prop_assert_eq!(placed.layer.is_some(), has_edge);
        }
        prop_assert_eq!(layout(&nodes, &edges).unwrap(), first);
    }

    #[test]
    fn neighbourhood_matches_reachability((nodes, edges) in arb_dag(), pick in 0usize..60) {
        let mut g = JobGraph::new();
        for node in &nodes {
            g.add_job(&node.name);
        }
        for node in &nodes {
            let parents: Vec<String> = edges.iter().filter(|(_, c)| *c == node.name).map(|(p, _)| p.clone()).collect();
            g.set_parents(&node.name, &parents).unwrap();
        }
        let start = &nodes[pick % nodes.len()].name;
        // Reference: x is in the neighbourhood iff x reaches start or start reaches x, by naive fixpoint.
        let reaches = |from: &str, to: &str| {
            let mut seen: BTreeSet<String> = BTreeSet::from([from.to_owned()]);
            loop {
                let before = seen.len();
                for (p, c) in &edges {
                    if seen.contains(p) {
                        seen.insert(c.clone());
                    }
                }
                if seen.len() == before {
                    return seen.contains(to);
                }
            }
        };
        let expected: BTreeSet<String> = nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| reaches(n, start) || reaches(start, n))
            .collect();
        prop_assert_eq!(neighbourhood(&g, start), expected);
    }
}
