//! A layered (Sugiyama-style) drawing of the job graph, left to right, rendered as standalone SVG on the server.
//!
//! The pipeline for each connected part of the graph:
//! 1. **Layers.** Every parent sits at least one layer left of its children. The longest path from the roots gives
//!    a first layering, which network simplex then tightens to the least total edge length, so that a root or a
//!    small group of jobs feeding a deep job sits next to it instead of far left with long edges across the picture.
//! 2. **Dummies.** An edge spanning k > 1 layers is split by k - 1 dummy points, one per layer it crosses. Each
//!    dummy gets a slot of its own in its layer's column, so an edge crosses a column only where no box is.
//! 3. **Order.** Alternating down and up sweeps sort each layer by the barycenter of its neighbours in the layer
//!    just swept; the ordering with the fewest crossings (counted exactly, O(E log V) per pass) is kept.
//! 4. **Coordinates.** Layers become columns. Within a column, items are kept in their order with a minimum gap and
//!    pulled toward the median of their neighbours, as a weighted least-squares fit solved exactly by pool-adjacent
//!    violators (O(n) per column), over a few alternating passes. Dummies weigh more than jobs so that long edges
//!    run straight.
//!
//! Edges leave a box on its right side and enter on the left. Between columns an edge is a cubic curve whose control
//! points share the gap's x range, so the curve never leaves the gap; inside a column it is a horizontal line in its
//! own slot. Hence no edge passes through a box, by construction.
//!
//! Connected parts are laid out separately and shelf-packed (tallest first) toward a landscape picture, so that many
//! small pipelines sit side by side instead of stacking into a narrow, tall band. Jobs with no edge at all are not
//! layered: a layered drawing would stack them in one absurdly tall first column, so they go in a compact grid below
//! everything else, in input order, under a caption.
//!
//! Everything is pure and deterministic: no I/O, no clock, no randomness, and hash maps are only looked up, never
//! iterated, so the same input gives the same bytes.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};

use super::JobGraph;

/// Label font size in px; the CSS below uses the same value.
const FONT_SIZE: f64 = 13.0;
/// Estimated advance of one character at [`FONT_SIZE`], used to size boxes without font metrics.
const CHAR_WIDTH: f64 = 7.5;
/// Horizontal padding on each side of a label.
const LABEL_PAD: f64 = 10.0;
const MIN_NODE_WIDTH: f64 = 56.0;
/// Longer names are truncated with an ellipsis; the full name is in the box's `<title>`.
const MAX_NODE_WIDTH: f64 = 240.0;
const NODE_HEIGHT: f64 = 28.0;
/// Vertical gap between two boxes in one column.
const NODE_GAP: f64 = 14.0;
/// Vertical gap between an edge passing through a column and its neighbours (boxes or other edges).
const EDGE_GAP: f64 = 8.0;
/// Horizontal gap between columns, where the edge curves run.
const LAYER_GAP: f64 = 72.0;
/// Space between packed connected parts, and between them and the grid of unconnected jobs.
const PART_GAP: f64 = 40.0;
/// Space above the grid of unconnected jobs for its caption.
const CAPTION_HEIGHT: f64 = 26.0;
const GRID_GAP_X: f64 = 14.0;
const GRID_GAP_Y: f64 = 10.0;
/// Space around the whole picture.
const MARGIN: f64 = 20.0;
/// Height of the legend band that [`render_svg`] adds above the layout.
const LEGEND_HEIGHT: f64 = 34.0;
/// The width-to-height ratio that packing aims for: a typical screen.
const ASPECT: f64 = 1.6;
/// Upper bound on down-and-up ordering passes; a pass costs O((V + E) log V).
const ORDER_PASSES: usize = 12;
/// Ordering stops after this many passes without fewer crossings.
const ORDER_PATIENCE: usize = 3;
/// Alternating coordinate passes (each visits every column once).
const COORDINATE_PASSES: usize = 8;
/// Weight of a dummy relative to a job when a column is fitted to its neighbours.
const DUMMY_WEIGHT: f64 = 4.0;

/// A reason why [`layout`] cannot draw its input. A [`JobGraph`] never produces any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The same job is listed twice.
    #[error("job '{0}' is listed more than once")]
    DuplicateJob(String),
    /// An edge names a job that is not in the list.
    #[error("the edge '{parent}' -> '{child}' names a job that is not listed")]
    UnknownJob { parent: String, child: String },
    /// The edges close a cycle through this job.
    #[error("the edges form a cycle through job '{0}'")]
    Cycle(String),
}

/// The outcome of a job's last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    #[default]
    NeverRun,
    Success,
    Failure,
}

/// What a job is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activity {
    #[default]
    Idle,
    Queued,
    Running,
}

/// Everything that decides how a job's box is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeState {
    pub outcome: Outcome,
    pub activity: Activity,
    pub disabled: bool,
}

impl NodeState {
    /// The one colour class a box gets, as in `state-{class}`: what is happening now beats being disabled, which
    /// beats the last outcome. One of `running`, `queued`, `disabled`, `failure`, `success`, `never-run`.
    pub fn class(self) -> &'static str {
        match (self.activity, self.disabled, self.outcome) {
            (Activity::Running, _, _) => "running",
            (Activity::Queued, _, _) => "queued",
            (Activity::Idle, true, _) => "disabled",
            (Activity::Idle, false, Outcome::Failure) => "failure",
            (Activity::Idle, false, Outcome::Success) => "success",
            (Activity::Idle, false, Outcome::NeverRun) => "never-run",
        }
    }
}

/// Spelled out in full for tooltips, since the colour shows only one part of the state.
impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.outcome {
            Outcome::NeverRun => "never run",
            Outcome::Success => "last run succeeded",
            Outcome::Failure => "last run failed",
        })?;
        f.write_str(match self.activity {
            Activity::Idle => ", idle",
            Activity::Queued => ", queued",
            Activity::Running => ", running",
        })?;
        if self.disabled {
            f.write_str(", disabled")?;
        }
        Ok(())
    }
}

/// A job to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub state: NodeState,
}

/// A point in SVG user units (px), y pointing down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// An axis-aligned rectangle: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.width
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.height
    }

    pub fn center_y(&self) -> f64 {
        self.y + self.height / 2.0
    }
}

/// A job's box.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedNode {
    pub name: String,
    pub state: NodeState,
    /// The name as shown: truncated with an ellipsis when it would not fit the widest box.
    pub label: String,
    pub rect: Rect,
    /// The column within its connected part; `None` for a job without edges (drawn in the grid).
    pub layer: Option<usize>,
}

/// An edge as a polyline from the right side of its parent's box to the left side of its child's box.
///
/// Consecutive points at the same height are joined by a straight line; the others span exactly one gap between
/// columns and are drawn as a cubic curve that stays within the bounding box of the two points.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedEdge {
    /// Index of the parent in [`Layout::nodes`].
    pub parent: usize,
    /// Index of the child in [`Layout::nodes`].
    pub child: usize,
    pub points: Vec<Point>,
}

/// A drawing of the graph, in the order of the input: `nodes[i]` is the i-th input job, and `edges` follow the
/// input edges without duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<PlacedNode>,
    pub edges: Vec<PlacedEdge>,
    /// Where the grid of jobs without edges is, if there are any; its caption goes just above it.
    pub unconnected: Option<Rect>,
}

/// How [`render_svg`] draws a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvgOptions {
    /// Each box links to this followed by the URL-encoded job name, e.g. `/jobs/`.
    pub link_prefix: String,
    /// A job to draw with a thicker outline, along with its edges (for `/graph?job=<name>`).
    pub highlight: Option<String>,
    /// Whether to draw a legend of the colours above the graph.
    pub legend: bool,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self {
            link_prefix: "/jobs/".to_owned(),
            highlight: None,
            legend: true,
        }
    }
}

/// The input for [`layout`] from a [`JobGraph`]: the jobs for which `keep` holds, in insertion order, with their
/// state, and the edges between two kept jobs as (parent, child), in insertion order.
pub fn graph_input(
    graph: &JobGraph,
    keep: impl Fn(&str) -> bool,
    state: impl Fn(&str) -> NodeState,
) -> (Vec<Node>, Vec<(String, String)>) {
    let nodes = graph
        .names()
        .into_iter()
        .filter(|name| keep(name))
        .map(|name| {
            let state = state(&name);
            Node { name, state }
        })
        .collect();
    let edges = graph
        .edges()
        .into_iter()
        .filter(|(parent, child)| keep(parent) && keep(child))
        .collect();
    (nodes, edges)
}

/// The job `name`, all its ancestors and all its descendants; empty if there is no such job.
pub fn neighbourhood(graph: &JobGraph, name: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    if !graph.contains(name) {
        return found;
    }
    found.insert(name.to_owned());
    // Ancestors and descendants are disjoint in a DAG, but one `found` set serves both searches anyway: the start
    // is the only job they share, and it is seeded before either runs.
    for towards_parents in [true, false] {
        let mut queue = VecDeque::from([name.to_owned()]);
        while let Some(job) = queue.pop_front() {
            let next = if towards_parents {
                graph.parents(&job)
            } else {
                graph.children(&job)
            };
            for other in next {
                if found.insert(other.clone()) {
                    queue.push_back(other);
                }
            }
        }
    }
    found
}

/// Lay out `nodes` with `edges` given as (parent, child) names. Duplicate edges are drawn once.
pub fn layout(nodes: &[Node], edges: &[(String, String)]) -> Result<Layout, Error> {
    let n = nodes.len();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        if index.insert(node.name.as_str(), i).is_some() {
            return Err(Error::DuplicateJob(node.name.clone()));
        }
    }
    let mut links: Vec<(usize, usize)> = Vec::with_capacity(edges.len());
    let mut seen = HashSet::with_capacity(edges.len());
    for (parent, child) in edges {
        let (Some(&p), Some(&c)) = (index.get(parent.as_str()), index.get(child.as_str())) else {
            return Err(Error::UnknownJob {
                parent: parent.clone(),
                child: child.clone(),
            });
        };
        if p == c {
            return Err(Error::Cycle(parent.clone()));
        }
        if seen.insert((p, c)) {
            links.push((p, c));
        }
    }
    let graph = Adjacency::new(n, &links);
    let topo = graph
        .topological_order()
        .map_err(|v| Error::Cycle(nodes[v].name.clone()))?;

    let mut placed: Vec<PlacedNode> = nodes
        .iter()
        .map(|node| {
            let (label, width) = fit_label(&node.name);
            PlacedNode {
                name: node.name.clone(),
                state: node.state,
                label,
                rect: Rect {
                    x: 0.0,
                    y: 0.0,
                    width,
                    height: NODE_HEIGHT,
                },
                layer: None,
            }
        })
        .collect();

    // Connected parts, numbered by their first job in input order.
    let (part_of, parts) = graph.connected_parts();
    let mut part_topo: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
    for &v in &topo {
        part_topo[part_of[v]].push(v);
    }
    let mut part_links: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
    for (e, &(p, _)) in links.iter().enumerate() {
        part_links[part_of[p]].push(e);
    }

    let mut points: Vec<Vec<Point>> = vec![Vec::new(); links.len()];
    let mut drawn: Vec<Drawn> = Vec::new();
    let mut unconnected: Vec<usize> = Vec::new();
    for (k, members) in parts.iter().enumerate() {
        if members.len() == 1 {
            unconnected.push(members[0]);
        } else {
            drawn.push(draw_part(&links, &part_topo[k], &part_links[k], &mut placed));
        }
    }

    // Shelf packing, tallest first (ties in input order), rows no wider than the widest part or a landscape width.
    let area: f64 = drawn
        .iter()
        .map(|d| (d.width + PART_GAP) * (d.height + PART_GAP))
        .sum();
    let widest = drawn.iter().map(|d| d.width).fold(0.0, f64::max);
    let row_limit = widest.max((area * ASPECT).sqrt());
    let mut by_height: Vec<usize> = (0..drawn.len()).collect();
    by_height.sort_by(|&a, &b| drawn[b].height.total_cmp(&drawn[a].height));
    let (mut x, mut y, mut row_height, mut packed_width, mut packed_height) =
        (0.0, 0.0, 0.0_f64, 0.0_f64, 0.0);
    for &d in &by_height {
        let part = &drawn[d];
        if x > 0.0 && x + part.width > row_limit {
            x = 0.0;
            y += row_height + PART_GAP;
            row_height = 0.0;
        }
        let (dx, dy) = (MARGIN + x, MARGIN + y);
        for &v in &part.nodes {
            placed[v].rect.x += dx;
            placed[v].rect.y += dy;
        }
        for (e, line) in &part.edges {
            points[*e] = line
                .iter()
                .map(|p| Point {
                    x: p.x + dx,
                    y: p.y + dy,
                })
                .collect();
        }
        x += part.width + PART_GAP;
        row_height = row_height.max(part.height);
        packed_width = packed_width.max(x - PART_GAP);
        packed_height = y + row_height;
    }

    let mut width = packed_width + 2.0 * MARGIN;
    let mut height = packed_height + 2.0 * MARGIN;
    let mut grid = None;
    if !unconnected.is_empty() {
        let top = if drawn.is_empty() {
            MARGIN + CAPTION_HEIGHT
        } else {
            MARGIN + packed_height + PART_GAP + CAPTION_HEIGHT
        };
        let rect = place_grid(&unconnected, packed_width, MARGIN, top, &mut placed);
        width = width.max(rect.right() + MARGIN);
        height = rect.bottom() + MARGIN;
        grid = Some(rect);
    }

    let edges = links
        .iter()
        .zip(points)
        .map(|(&(parent, child), points)| PlacedEdge {
            parent,
            child,
            points,
        })
        .collect();
    Ok(Layout {
        width,
        height,
        nodes: placed,
        edges,
        unconnected: grid,
    })
}

/// The label to show for `name` and the width of its box.
fn fit_label(name: &str) -> (String, f64) {
    let max_chars = ((MAX_NODE_WIDTH - 2.0 * LABEL_PAD) / CHAR_WIDTH) as usize;
    let chars = name.chars().count();
    if chars <= max_chars {
        let width = (chars as f64 * CHAR_WIDTH + 2.0 * LABEL_PAD).clamp(MIN_NODE_WIDTH, MAX_NODE_WIDTH);
        (name.to_owned(), width)
    } else {
        let mut label: String = name.chars().take(max_chars - 1).collect();
        label.push('…');
        (label, MAX_NODE_WIDTH)
    }
}

/// Put the jobs without edges in a grid whose top-left corner is (`left`, `top`), filled row by row.
///
/// Every cell is as wide as the widest of these boxes, and the boxes are widened to match, so the columns line up.
/// The grid is as wide as the packed parts above it, or, if that is narrower, as wide as a landscape block of all
/// the cells would be.
fn place_grid(jobs: &[usize], packed_width: f64, left: f64, top: f64, placed: &mut [PlacedNode]) -> Rect {
    let cell = jobs.iter().map(|&v| placed[v].rect.width).fold(0.0, f64::max);
    let (pitch_x, pitch_y) = (cell + GRID_GAP_X, NODE_HEIGHT + GRID_GAP_Y);
    let landscape = (jobs.len() as f64 * ASPECT * pitch_y / pitch_x).sqrt().ceil() * pitch_x;
    let fits = ((packed_width.max(landscape) + GRID_GAP_X) / pitch_x).floor() as usize;
    let columns = fits.clamp(1, jobs.len());
    for (i, &v) in jobs.iter().enumerate() {
        placed[v].rect = Rect {
            x: left + (i % columns) as f64 * pitch_x,
            y: top + (i / columns) as f64 * pitch_y,
            width: cell,
            height: NODE_HEIGHT,
        };
    }
    let rows = jobs.len().div_ceil(columns);
    Rect {
        x: left,
        y: top,
        width: columns as f64 * pitch_x - GRID_GAP_X,
        height: rows as f64 * pitch_y - GRID_GAP_Y,
    }
}

/// The edges as adjacency lists, each in input order.
struct Adjacency {
    parents: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
}

impl Adjacency {
    fn new(n: usize, links: &[(usize, usize)]) -> Self {
        let mut parents = vec![Vec::new(); n];
        let mut children = vec![Vec::new(); n];
        for &(p, c) in links {
            children[p].push(c);
            parents[c].push(p);
        }
        Self { parents, children }
    }

    /// Kahn's algorithm, roots in input order; on a cycle, `Err` with a job on it.
    fn topological_order(&self) -> Result<Vec<usize>, usize> {
        let n = self.parents.len();
        let mut waiting: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&v| waiting[v] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(v) = queue.pop_front() {
            order.push(v);
            for &c in &self.children[v] {
                waiting[c] -= 1;
                if waiting[c] == 0 {
                    queue.push_back(c);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        // Every job left over still waits for a parent that is also left over, so walking such parents must
        // eventually repeat a job, and the repeated job is on a cycle (not merely downstream of one).
        let mut v = (0..n).find(|&v| waiting[v] > 0).unwrap_or_default();
        let mut visited = vec![false; n];
        while !visited[v] {
            visited[v] = true;
            v = self.parents[v]
                .iter()
                .copied()
                .find(|&p| waiting[p] > 0)
                .unwrap_or(v);
        }
        Err(v)
    }

    /// Which connected part each job is in, and the members of each part in input order; parts are numbered by
    /// their first member.
    fn connected_parts(&self) -> (Vec<usize>, Vec<Vec<usize>>) {
        let n = self.parents.len();
        let mut part_of = vec![usize::MAX; n];
        let mut parts = Vec::new();
        let mut stack = Vec::new();
        for start in 0..n {
            if part_of[start] != usize::MAX {
                continue;
            }
            let k = parts.len();
            let mut members = Vec::new();
            part_of[start] = k;
            stack.push(start);
            while let Some(v) = stack.pop() {
                members.push(v);
                for &w in self.parents[v].iter().chain(&self.children[v]) {
                    if part_of[w] == usize::MAX {
                        part_of[w] = k;
                        stack.push(w);
                    }
                }
            }
            members.sort_unstable();
            parts.push(members);
        }
        (part_of, parts)
    }
}

/// One connected part, drawn with its top-left corner at the origin.
struct Drawn {
    width: f64,
    height: f64,
    /// The jobs in it; their rects in `placed` are already set relative to the origin.
    nodes: Vec<usize>,
    /// (edge index, polyline) for each of its edges.
    edges: Vec<(usize, Vec<Point>)>,
}

/// A box or a dummy in the layered graph.
struct Item {
    layer: usize,
    /// The job, or `None` for a dummy.
    job: Option<usize>,
    /// Half the vertical extent of its slot.
    half: f64,
}

/// Lay out one connected part: `topo` is its jobs in topological order, `part_links` its edges' indices.
fn draw_part(
    links: &[(usize, usize)],
    topo: &[usize],
    part_links: &[usize],
    placed: &mut [PlacedNode],
) -> Drawn {
    // Local numbering: the part's jobs in input order, so that roots are met in input order below.
    let mut jobs: Vec<usize> = topo.to_vec();
    jobs.sort_unstable();
    let local: HashMap<usize, usize> = jobs.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let edges: Vec<(usize, usize)> = part_links
        .iter()
        .map(|&e| (local[&links[e].0], local[&links[e].1]))
        .collect();
    let order: Vec<usize> = topo.iter().map(|v| local[v]).collect();
    let layer = assign_layers(&order, &edges);
    let layers_count = layer.iter().max().map_or(0, |l| l + 1);

    // Items: the jobs first, by local number, then the dummies.
    let mut items: Vec<Item> = jobs
        .iter()
        .zip(&layer)
        .map(|(&v, &l)| Item {
            layer: l,
            job: Some(v),
            half: NODE_HEIGHT / 2.0,
        })
        .collect();
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    for &(p, c) in &edges {
        let mut chain = Vec::new();
        let mut prev = p;
        for l in layer[p] + 1..layer[c] {
            let d = items.len();
            items.push(Item {
                layer: l,
                job: None,
                half: 0.0,
            });
            up.push(vec![prev]);
            down.push(Vec::new());
            down[prev].push(d);
            chain.push(d);
            prev = d;
        }
        down[prev].push(c);
        up[c].push(prev);
        chains.push(chain);
    }

    let mut layers = initial_order(&items, &up, &down, layers_count);
    reduce_crossings(&mut layers, items.len(), &up, &down);
    let y = vertical_positions(&items, &layers, &up, &down);

    // Columns: as wide as their widest box, boxes centred.
    let mut column_width = vec![0.0_f64; layers_count];
    for item in &items {
        if let Some(v) = item.job {
            column_width[item.layer] = column_width[item.layer].max(placed[v].rect.width);
        }
    }
    let mut column_x = Vec::with_capacity(layers_count);
    let mut x = 0.0;
    for &w in &column_width {
        column_x.push(x);
        x += w + LAYER_GAP;
    }
    let width = x - LAYER_GAP;
    let height = items
        .iter()
        .zip(&y)
        .map(|(it, y)| y + it.half)
        .fold(0.0, f64::max);

    for (item, &cy) in items.iter().zip(&y) {
        if let Some(v) = item.job {
            let rect = &mut placed[v].rect;
            rect.x = column_x[item.layer] + (column_width[item.layer] - rect.width) / 2.0;
            rect.y = cy - NODE_HEIGHT / 2.0;
            placed[v].layer = Some(item.layer);
        }
    }

    let column_right = |l: usize| column_x[l] + column_width[l];
    let edges = part_links
        .iter()
        .zip(&chains)
        .map(|(&e, chain)| {
            let (p, c) = links[e];
            let (from, to) = (placed[p].rect, placed[c].rect);
            let (lp, lc) = (layer[local[&p]], layer[local[&c]]);
            let mut line = Vec::with_capacity(4 + 2 * chain.len());
            // Leave horizontally to the column's edge first: a diagonal inside the column could clip a wider box
            // above or below.
            line.push(Point {
                x: from.right(),
                y: from.center_y(),
            });
            if from.right() < column_right(lp) {
                line.push(Point {
                    x: column_right(lp),
                    y: from.center_y(),
                });
            }
            for &d in chain {
                let l = items[d].layer;
                line.push(Point {
                    x: column_x[l],
                    y: y[d],
                });
                line.push(Point {
                    x: column_right(l),
                    y: y[d],
                });
            }
            if to.x > column_x[lc] {
                line.push(Point {
                    x: column_x[lc],
                    y: to.center_y(),
                });
            }
            line.push(Point {
                x: to.x,
                y: to.center_y(),
            });
            (e, line)
        })
        .collect();

    Drawn {
        width,
        height,
        nodes: jobs,
        edges,
    }
}

/// The layer of each job of a connected part (`order` is topological, `edges` are (parent, child)): the longest
/// path from a root, tightened by network simplex to the layering with the least total edge length.
///
/// Longest path alone leaves a root, or a small group of jobs, feeding a deep job far to the left, with long edges
/// across the picture; minimising the total length moves such groups right as a whole, which no rule for a single
/// job can. Every step keeps each child at least one layer right of its parents.
fn assign_layers(order: &[usize], edges: &[(usize, usize)]) -> Vec<usize> {
    let n = order.len();
    let mut incident: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (e, &(p, c)) in edges.iter().enumerate() {
        incident[p].push(e);
        incident[c].push(e);
        parents[c].push(p);
    }
    let mut rank = vec![0_i64; n];
    for &v in order {
        rank[v] = parents[v].iter().map(|&p| rank[p] + 1).max().unwrap_or(0);
    }
    let mut simplex = Simplex::new(edges, incident, rank);
    simplex.feasible_tree();
    simplex.optimise();
    let low = simplex.rank.iter().copied().min().unwrap_or(0);
    simplex.rank.iter().map(|&r| (r - low) as usize).collect()
}

/// Network simplex for layering (Gansner, Koutsofios, North, Vo: "A technique for drawing directed graphs", 1993),
/// on a connected graph with unit edge weights and minimum lengths. A spanning tree of tight edges (each exactly one
/// layer long) fixes the ranks; while some tree edge has a negative cut value, swapping it for the tightest non-tree
/// edge across the same cut shortens the total edge length.
///
/// As in Graphviz, a swap only touches what it changes: the cut values on the tree path between the entering edge's
/// ends, the ranks on one side of the cut, and the tree numbering below the lowest common ancestor. The search for a
/// leaving edge resumes where the last one stopped and takes the most negative of the first [`SEARCH_SIZE`] found.
/// The number of swaps is capped; ranks stay feasible after every swap, so stopping early only costs optimality.
struct Simplex<'a> {
    edges: &'a [(usize, usize)],
    incident: Vec<Vec<usize>>,
    rank: Vec<i64>,
    in_tree: Vec<bool>,
    /// The tree edges, in a fixed order for the leaving-edge search; a swap replaces an edge in place.
    tree_edges: Vec<usize>,
    /// Where the next leaving-edge search starts in `tree_edges`.
    search_from: usize,
    /// Tree edges at each node.
    tree: Vec<Vec<usize>>,
    /// The tree edge to each node's parent in the tree rooted at node 0 (`usize::MAX` for the root).
    up_edge: Vec<usize>,
    /// Postorder numbers from 1: `lim[v]` is v's, `low[v]` the smallest in v's subtree, so that x is in v's subtree
    /// iff `low[v] <= lim[x] <= lim[v]`, and a subtree is a contiguous range of `by_lim`.
    low: Vec<usize>,
    lim: Vec<usize>,
    by_lim: Vec<usize>,
    /// Cut value of each tree edge.
    cut: Vec<i64>,
    stack: Vec<(usize, usize)>,
}

/// How many tree edges with a negative cut value the leaving-edge search looks at (Graphviz's default).
const SEARCH_SIZE: usize = 30;

impl<'a> Simplex<'a> {
    fn new(edges: &'a [(usize, usize)], incident: Vec<Vec<usize>>, rank: Vec<i64>) -> Self {
        let n = rank.len();
        Self {
            edges,
            incident,
            rank,
            in_tree: vec![false; edges.len()],
            tree_edges: Vec::with_capacity(n),
            search_from: 0,
            tree: vec![Vec::new(); n],
            up_edge: vec![usize::MAX; n],
            low: vec![0; n],
            lim: vec![0; n],
            by_lim: vec![0; n + 1],
            cut: vec![0; edges.len()],
            stack: Vec::new(),
        }
    }

    fn slack(&self, e: usize) -> i64 {
        let (p, c) = self.edges[e];
        self.rank[c] - self.rank[p] - 1
    }

    fn other(&self, e: usize, v: usize) -> usize {
        let (p, c) = self.edges[e];
        if p == v { c } else { p }
    }

    /// Whether `x` is in the subtree of `v`.
    fn below(&self, x: usize, v: usize) -> bool {
        self.low[v] <= self.lim[x] && self.lim[x] <= self.lim[v]
    }

    /// Grow a tree of tight edges from node 0; when it stalls, shift the whole tree by the smallest slack of an
    /// edge leaving it, which makes that edge tight. Then number it and compute every cut value.
    fn feasible_tree(&mut self) {
        let n = self.rank.len();
        let mut member = vec![false; n];
        member[0] = true;
        let mut size = 1;
        let mut stack = vec![0];
        loop {
            while let Some(v) = stack.pop() {
                for i in 0..self.incident[v].len() {
                    let e = self.incident[v][i];
                    let w = self.other(e, v);
                    if !member[w] && self.slack(e) == 0 {
                        member[w] = true;
                        size += 1;
                        self.in_tree[e] = true;
                        self.tree[v].push(e);
                        self.tree[w].push(e);
                        stack.push(w);
                    }
                }
            }
            if size == n {
                break;
            }
            // The part is connected, so some edge leaves the tree.
            let Some(e) = (0..self.edges.len())
                .filter(|&e| member[self.edges[e].0] != member[self.edges[e].1])
                .min_by_key(|&e| self.slack(e))
            else {
                break;
            };
            let slack = self.slack(e);
            let delta = if member[self.edges[e].0] { slack } else { -slack };
            for (v, &inside) in member.iter().enumerate() {
                if inside {
                    self.rank[v] += delta;
                    stack.push(v);
                }
            }
        }
        self.tree_edges = (0..self.edges.len()).filter(|&e| self.in_tree[e]).collect();
        self.number(0, usize::MAX, 1);
        // Children before parents: postorder, which is the order of `lim`.
        for l in 1..=n {
            let v = self.by_lim[l];
            if self.up_edge[v] != usize::MAX {
                self.cut[self.up_edge[v]] = self.cut_value(v);
            }
        }
    }

    /// The cut value of the tree edge above `v`, from the cut values of the tree edges below it: the weight of the
    /// edges from the tail side of the cut to the head side, minus the weight of those going back.
    fn cut_value(&self, v: usize) -> i64 {
        let up = self.up_edge[v];
        let v_is_tail = self.edges[up].0 == v;
        let mut value = 1;
        for &e in &self.incident[v] {
            if e == up {
                continue;
            }
            let same_direction = (self.edges[e].0 == v) == v_is_tail;
            value += if same_direction { 1 } else { -1 };
            if self.in_tree[e] {
                // A tree edge at v other than its parent edge leads to one of v's children.
                value += if same_direction { -self.cut[e] } else { self.cut[e] };
            }
        }
        value
    }

    /// Number the subtree of `v`, whose parent edge is `up`, with postorder numbers from `next`.
    fn number(&mut self, v: usize, up: usize, mut next: usize) {
        self.up_edge[v] = up;
        self.low[v] = next;
        self.stack.clear();
        self.stack.push((v, 0));
        while let Some(&mut (x, ref mut i)) = self.stack.last_mut() {
            if let Some(&e) = self.tree[x].get(*i) {
                *i += 1;
                if e != self.up_edge[x] {
                    let y = self.other(e, x);
                    self.up_edge[y] = e;
                    self.low[y] = next;
                    self.stack.push((y, 0));
                }
            } else {
                self.lim[x] = next;
                self.by_lim[next] = x;
                next += 1;
                self.stack.pop();
            }
        }
    }

    fn optimise(&mut self) {
        let limit = 10 * self.rank.len() + 100;
        for _ in 0..limit {
            let Some((slot, leave)) = self.leaving() else {
                return;
            };
            let Some(enter) = self.entering(leave) else {
                return;
            };
            self.exchange(slot, leave, enter);
        }
    }

    /// A tree edge with a negative cut value and its place in `tree_edges`: the most negative among the first
    /// [`SEARCH_SIZE`] found from where the last search stopped.
    fn leaving(&mut self) -> Option<(usize, usize)> {
        let m = self.tree_edges.len();
        let mut best: Option<(usize, usize)> = None;
        let mut found = 0;
        for k in 0..m {
            let slot = (self.search_from + k) % m;
            let e = self.tree_edges[slot];
            if self.cut[e] < 0 {
                if best.is_none_or(|(_, b)| self.cut[e] < self.cut[b]) {
                    best = Some((slot, e));
                }
                found += 1;
                if found == SEARCH_SIZE {
                    self.search_from = slot;
                    break;
                }
            }
        }
        best
    }

    /// The non-tree edge with the least slack that crosses the cut made by removing the tree edge `leave` in the
    /// direction that makes the exchange worthwhile, found by walking the subtree cut off.
    fn entering(&mut self, leave: usize) -> Option<usize> {
        let (p, c) = self.edges[leave];
        // A negative cut value means that more edges run from the side of `leave`'s head to the side of its tail
        // than the other way, and the replacement must be one of those: into the subtree if the subtree holds the
        // tail, out of it otherwise.
        let (root, tail_below) = if self.lim[p] < self.lim[c] {
            (p, true)
        } else {
            (c, false)
        };
        let mut best: Option<(i64, usize)> = None;
        self.stack.clear();
        self.stack.push((root, 0));
        while let Some((x, _)) = self.stack.pop() {
            for &e in &self.incident[x] {
                let (a, b) = self.edges[e];
                if self.in_tree[e] {
                    let y = if a == x { b } else { a };
                    if self.up_edge[y] == e {
                        self.stack.push((y, 0));
                    }
                    continue;
                }
                // From outside into the subtree, or from inside out of it.
                let crossing = if tail_below {
                    b == x && !self.below(a, root)
                } else {
                    a == x && !self.below(b, root)
                };
                if crossing {
                    let slack = self.slack(e);
                    if best.is_none_or(|(s, _)| slack < s) {
                        best = Some((slack, e));
                        if slack == 0 {
                            return Some(e);
                        }
                    }
                }
            }
        }
        best.map(|(_, e)| e)
    }

    /// Swap the tree edge `leave` (at `slot` in `tree_edges`) for `enter`.
    fn exchange(&mut self, slot: usize, leave: usize, enter: usize) {
        let (p, c) = self.edges[leave];
        let root = if self.lim[p] < self.lim[c] { p } else { c };
        // Shift the side cut off so that `enter` becomes tight; only relative ranks matter.
        let delta = self.slack(enter);
        if delta != 0 {
            let shift = if self.below(self.edges[enter].0, root) {
                delta
            } else {
                -delta
            };
            for l in self.low[root]..=self.lim[root] {
                self.rank[self.by_lim[l]] += shift;
            }
        }
        // Only the cut values on the tree path between the ends of `enter` change, by the old cut value of `leave`.
        let value = self.cut[leave];
        let (tail, head) = self.edges[enter];
        let lca = self.update_path(tail, head, value, true);
        let same = self.update_path(head, tail, value, false);
        debug_assert_eq!(lca, same, "both walks meet at the lowest common ancestor");
        self.cut[enter] = -value;
        self.cut[leave] = 0;

        self.in_tree[leave] = false;
        self.tree[p].retain(|&x| x != leave);
        self.tree[c].retain(|&x| x != leave);
        self.in_tree[enter] = true;
        self.tree[tail].push(enter);
        self.tree[head].push(enter);
        self.tree_edges[slot] = enter;
        // Both edges lie below the common ancestor, so only its subtree changes shape; it keeps its number range.
        self.number(lca, self.up_edge[lca], self.low[lca]);
    }

    /// Walk up from `v` until an ancestor of `w`, adjusting the cut value of each tree edge passed by `value`, in
    /// the direction given by `forward` and the edge's orientation. Returns that ancestor.
    fn update_path(&mut self, mut v: usize, w: usize, value: i64, forward: bool) -> usize {
        while !self.below(w, v) {
            let e = self.up_edge[v];
            let (p, c) = self.edges[e];
            if (v == p) == forward {
                self.cut[e] += value;
            } else {
                self.cut[e] -= value;
            }
            v = if self.lim[p] > self.lim[c] { p } else { c };
        }
        v
    }
}

/// Each layer's items in depth-first discovery order from the roots, so that related items start out close.
fn initial_order(items: &[Item], up: &[Vec<usize>], down: &[Vec<usize>], layers: usize) -> Vec<Vec<usize>> {
    let mut visited = vec![false; items.len()];
    let mut result: Vec<Vec<usize>> = vec![Vec::new(); layers];
    let mut stack: Vec<usize> = (0..items.len()).filter(|&i| up[i].is_empty()).rev().collect();
    while let Some(i) = stack.pop() {
        if visited[i] {
            continue;
        }
        visited[i] = true;
        result[items[i].layer].push(i);
        stack.extend(down[i].iter().rev().filter(|&&j| !visited[j]));
    }
    result
}

/// Barycenter sweeps, keeping the ordering with the fewest crossings.
fn reduce_crossings(layers: &mut [Vec<usize>], items: usize, up: &[Vec<usize>], down: &[Vec<usize>]) {
    let mut pos = vec![0usize; items];
    for layer in layers.iter() {
        for (i, &it) in layer.iter().enumerate() {
            pos[it] = i;
        }
    }
    let mut best = count_crossings(layers, &pos, down);
    let mut best_layers = layers.to_vec();
    let mut keys: Vec<(f64, usize)> = Vec::new();
    let mut stale = 0;
    for _ in 0..ORDER_PASSES {
        if best == 0 || stale >= ORDER_PATIENCE {
            break;
        }
        for l in 1..layers.len() {
            let other = layers[l - 1].len();
            sort_by_barycenter(&mut layers[l], &mut pos, up, other, &mut keys);
        }
        for l in (0..layers.len().saturating_sub(1)).rev() {
            let other = layers[l + 1].len();
            sort_by_barycenter(&mut layers[l], &mut pos, down, other, &mut keys);
        }
        let crossings = count_crossings(layers, &pos, down);
        if crossings < best {
            best = crossings;
            best_layers.clone_from_slice(layers);
            stale = 0;
        } else {
            stale += 1;
        }
    }
    layers.clone_from_slice(&best_layers);
}

/// Sort one layer by the mean position of each item's neighbours in the adjacent layer (`neighbours`, which has
/// `other` items). Positions are normalised to 0..1 so that an item without neighbours there can keep its own
/// relative place; the stable sort keeps the current order among equal keys.
fn sort_by_barycenter(
    layer: &mut [usize],
    pos: &mut [usize],
    neighbours: &[Vec<usize>],
    other: usize,
    keys: &mut Vec<(f64, usize)>,
) {
    let len = layer.len() as f64;
    keys.clear();
    for (i, &it) in layer.iter().enumerate() {
        let around = &neighbours[it];
        let key = if around.is_empty() {
            (i as f64 + 0.5) / len
        } else {
            let sum: f64 = around.iter().map(|&j| pos[j] as f64 + 0.5).sum();
            sum / around.len() as f64 / other as f64
        };
        keys.push((key, it));
    }
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (i, &(_, it)) in keys.iter().enumerate() {
        layer[i] = it;
        pos[it] = i;
    }
}

/// The number of edge crossings between consecutive layers: per pair of layers, the inversions among the lower
/// ends of the edges listed in the order of their upper ends, counted with a Fenwick tree (Barth, Jünger, Mutzel).
fn count_crossings(layers: &[Vec<usize>], pos: &[usize], down: &[Vec<usize>]) -> usize {
    let mut total = 0;
    let mut ends: Vec<usize> = Vec::new();
    let mut tree: Vec<usize> = Vec::new();
    for pair in layers.windows(2) {
        ends.clear();
        for &u in &pair[0] {
            let start = ends.len();
            ends.extend(down[u].iter().map(|&v| pos[v]));
            ends[start..].sort_unstable();
        }
        tree.clear();
        tree.resize(pair[1].len() + 1, 0);
        for (seen, &end) in ends.iter().enumerate() {
            // Earlier edges whose lower end is at or before this one do not cross it.
            let mut not_crossing = 0;
            let mut i = end + 1;
            while i > 0 {
                not_crossing += tree[i];
                i &= i - 1;
            }
            total += seen - not_crossing;
            let mut i = end + 1;
            while i < tree.len() {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
    }
    total
}

/// The centre height of every item: each column keeps its order and gaps and is fitted to the medians of its
/// neighbours, alternately those on the left and those on the right.
fn vertical_positions(
    items: &[Item],
    layers: &[Vec<usize>],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) -> Vec<f64> {
    let mut y = vec![0.0; items.len()];
    let mut want = Vec::new();
    let mut weight = Vec::new();
    let mut gap = Vec::new();
    let mut fitted = Vec::new();
    let mut around = Vec::new();
    // Start stacked: every column from the top with minimal gaps.
    for layer in layers {
        let mut at = 0.0;
        for (i, &it) in layer.iter().enumerate() {
            if i > 0 {
                at += separation(&items[layer[i - 1]], &items[it]);
            } else {
                at = items[it].half;
            }
            y[it] = at;
        }
    }
    for pass in 0..COORDINATE_PASSES {
        let from_left = pass % 2 == 0;
        let (neighbours, columns): (&[Vec<usize>], Box<dyn Iterator<Item = usize>>) = if from_left {
            (up, Box::new(1..layers.len()))
        } else {
            (down, Box::new((0..layers.len().saturating_sub(1)).rev()))
        };
        for l in columns {
            let layer = &layers[l];
            want.clear();
            weight.clear();
            gap.clear();
            for (i, &it) in layer.iter().enumerate() {
                around.clear();
                around.extend(neighbours[it].iter().map(|&j| y[j]));
                let dummy = items[it].job.is_none();
                if around.is_empty() {
                    // Nothing to pull towards on this side: stay put, but give way easily.
                    want.push(y[it]);
                    weight.push(0.25);
                } else {
                    around.sort_by(f64::total_cmp);
                    let mid = around.len() / 2;
                    let median = if around.len() % 2 == 1 {
                        around[mid]
                    } else {
                        (around[mid - 1] + around[mid]) / 2.0
                    };
                    want.push(median);
                    weight.push(if dummy { DUMMY_WEIGHT } else { 1.0 });
                }
                if i > 0 {
                    gap.push(separation(&items[layer[i - 1]], &items[it]));
                }
            }
            fit_in_order(&want, &weight, &gap, &mut fitted);
            for (&it, &at) in layer.iter().zip(&fitted) {
                y[it] = at;
            }
        }
    }
    // Move everything up so that the topmost slot starts at 0.
    let top = items
        .iter()
        .zip(&y)
        .map(|(it, y)| y - it.half)
        .fold(f64::INFINITY, f64::min);
    if top.is_finite() {
        for v in &mut y {
            *v -= top;
        }
    }
    y
}

/// The minimum distance between the centres of two items that are adjacent in a column.
fn separation(a: &Item, b: &Item) -> f64 {
    let gap = if a.job.is_some() && b.job.is_some() {
        NODE_GAP
    } else {
        EDGE_GAP
    };
    a.half + b.half + gap
}

/// Positions `out[i]` minimising Σ weight[i]·(out[i] − want[i])² subject to out[i+1] − out[i] ≥ gap[i].
///
/// Subtracting the cumulative gaps turns this into weighted isotonic regression, which pool-adjacent-violators
/// solves exactly in linear time: merge neighbouring blocks while they are out of order, each block sitting at
/// the weighted mean of its members.
fn fit_in_order(want: &[f64], weight: &[f64], gap: &[f64], out: &mut Vec<f64>) {
    let mut offset = Vec::with_capacity(want.len());
    let mut at = 0.0;
    for i in 0..want.len() {
        if i > 0 {
            at += gap[i - 1];
        }
        offset.push(at);
    }
    // Blocks as (weighted sum, total weight, number of members).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(want.len());
    for i in 0..want.len() {
        blocks.push(((want[i] - offset[i]) * weight[i], weight[i], 1));
        while blocks.len() >= 2 {
            let (s2, w2, n2) = blocks[blocks.len() - 1];
            let (s1, w1, n1) = blocks[blocks.len() - 2];
            if s1 / w1 < s2 / w2 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (s1 + s2, w1 + w2, n1 + n2);
        }
    }
    out.clear();
    for (sum, total, members) in blocks {
        let mean = sum / total;
        for _ in 0..members {
            out.push(mean + offset[out.len()]);
        }
    }
}

/// Draw a layout as a standalone SVG document, styled by an embedded stylesheet with a light and a dark scheme.
pub fn render_svg(layout: &Layout, opts: &SvgOptions) -> String {
    let legend_height = if opts.legend { LEGEND_HEIGHT } else { 0.0 };
    let width = layout.width.max(if opts.legend { LEGEND_WIDTH } else { 0.0 });
    let height = layout.height + legend_height;
    let highlight = opts
        .highlight
        .as_deref()
        .and_then(|name| layout.nodes.iter().position(|n| n.name == name));
    let points: usize = layout.edges.iter().map(|e| e.points.len()).sum();
    let mut out = String::with_capacity(4096 + layout.nodes.len() * 320 + points * 48);

    // Writing into a String cannot fail, so the fmt::Results below are moot.
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="Job dependency graph">"#,
        w = Num(width),
        h = Num(height),
    );
    out.push_str(STYLE);
    out.push_str(
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" orient="auto"><path class="arrowhead" d="M0,1L10,5L0,9z"/></marker><marker id="arrow-hl" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="10" markerHeight="10" markerUnits="userSpaceOnUse" orient="auto"><path class="arrowhead hl" d="M0,1L10,5L0,9z"/></marker></defs>"#,
    );
    let _ = write!(
        out,
        r#"<rect class="bg" width="{}" height="{}"/>"#,
        Num(width),
        Num(height)
    );
    if opts.legend {
        push_legend(&mut out);
    }
    if legend_height > 0.0 {
        let _ = write!(out, r#"<g transform="translate(0,{})">"#, Num(legend_height));
    } else {
        out.push_str("<g>");
    }

    if let Some(grid) = layout.unconnected {
        let _ = write!(
            out,
            r#"<text class="caption" x="{}" y="{}">Jobs without dependencies</text>"#,
            Num(grid.x),
            Num(grid.y - 9.0)
        );
    }

    // Edges first, so that boxes and their outlines are drawn on top of arrowheads; highlighted edges last.
    out.push_str(r#"<g class="edges">"#);
    let touches = |e: &PlacedEdge| highlight.is_some_and(|h| e.parent == h || e.child == h);
    for pass_highlighted in [false, true] {
        for edge in layout.edges.iter().filter(|e| touches(e) == pass_highlighted) {
            push_edge(&mut out, edge, pass_highlighted);
        }
    }
    out.push_str("</g>");

    out.push_str(r#"<g class="nodes">"#);
    for (i, node) in layout.nodes.iter().enumerate() {
        push_node(&mut out, node, &opts.link_prefix, highlight == Some(i));
    }
    out.push_str("</g></g></svg>\n");
    out
}

fn push_edge(out: &mut String, edge: &PlacedEdge, highlighted: bool) {
    let Some((first, rest)) = edge.points.split_first() else {
        return;
    };
    let (class, marker) = if highlighted {
        ("edge hl", "arrow-hl")
    } else {
        ("edge", "arrow")
    };
    let _ = write!(
        out,
        r#"<path class="{class}" marker-end="url(#{marker})" d="M{},{}"#,
        Num(first.x),
        Num(first.y)
    );
    let mut prev = *first;
    for &p in rest {
        if p.y == prev.y {
            let _ = write!(out, "H{}", Num(p.x));
        } else {
            // Both control points at mid-gap: the curve leaves and arrives horizontally and stays in the gap.
            let mid = (prev.x + p.x) / 2.0;
            let _ = write!(
                out,
                "C{m},{},{m},{},{},{}",
                Num(prev.y),
                Num(p.y),
                Num(p.x),
                Num(p.y),
                m = Num(mid)
            );
        }
        prev = p;
    }
    out.push_str("\"/>");
}

fn push_node(out: &mut String, node: &PlacedNode, link_prefix: &str, highlighted: bool) {
    let r = node.rect;
    out.push_str("<a href=\"");
    push_xml_escaped(out, link_prefix);
    push_url_encoded(out, &node.name);
    let _ = write!(out, "\"><g class=\"node state-{}", node.state.class());
    if highlighted {
        out.push_str(" highlight");
    }
    out.push_str("\"><title>");
    push_xml_escaped(out, &node.name);
    let _ = write!(out, "\n{}</title>", node.state);
    let _ = write!(
        out,
        r#"<rect x="{}" y="{}" width="{}" height="{}" rx="6"/>"#,
        Num(r.x),
        Num(r.y),
        Num(r.width),
        Num(r.height)
    );
    // A baseline a third of the font size below the centre looks centred; dominant-baseline is not applied
    // everywhere SVG is shown.
    let _ = write!(
        out,
        r#"<text x="{}" y="{}">"#,
        Num(r.x + r.width / 2.0),
        Num(r.center_y() + FONT_SIZE / 3.0)
    );
    push_xml_escaped(out, &node.label);
    out.push_str("</text></g></a>");
}

/// The legend's entries: colour class and wording.
const LEGEND: [(&str, &str); 6] = [
    ("success", "succeeded"),
    ("failure", "failed"),
    ("running", "running"),
    ("queued", "queued"),
    ("disabled", "disabled"),
    ("never-run", "never run"),
];
/// Room for one legend entry: swatch, gap and the longest wording.
const LEGEND_ENTRY: f64 = 100.0;
const LEGEND_WIDTH: f64 = 2.0 * MARGIN + LEGEND.len() as f64 * LEGEND_ENTRY;

fn push_legend(out: &mut String) {
    out.push_str(r#"<g class="legend">"#);
    for (i, (class, text)) in LEGEND.iter().enumerate() {
        let x = MARGIN + i as f64 * LEGEND_ENTRY;
        let _ = write!(
            out,
            r#"<g class="state-{class}"><rect x="{}" y="14" width="14" height="14" rx="3"/><text x="{}" y="25.5">{text}</text></g>"#,
            Num(x),
            Num(x + 20.0)
        );
    }
    out.push_str("</g>");
}

const STYLE: &str = r#"<style>
svg{font:13px ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.bg{fill:#f8f9fb}
.edge{fill:none;stroke:#98a2b3;stroke-width:1.3}
.edge.hl{stroke:#344054;stroke-width:2.2}
.arrowhead{fill:#98a2b3}
.arrowhead.hl{fill:#344054}
.node rect{stroke-width:1.5}
.node text{fill:#1d2939;text-anchor:middle}
.node:hover rect{stroke-width:2.5}
.node.highlight rect{stroke-width:3.5}
.legend text,.caption{fill:#667085;font-size:12px}
.state-success rect{fill:#e3f4e8;stroke:#2e9d55}
.state-failure rect{fill:#fde8e7;stroke:#d9362b}
.state-running rect{fill:#e4edfd;stroke:#2f6fdb}
.state-queued rect{fill:#fff3d6;stroke:#d99116}
.state-disabled rect{fill:#eceef1;stroke:#a1a8b3;stroke-dasharray:4 3}
.state-disabled text{fill:#7a8291}
.state-never-run rect{fill:#ffffff;stroke:#8d96a5}
@media (prefers-color-scheme:dark){
.bg{fill:#14171c}
.edge{stroke:#5d6675}
.edge.hl{stroke:#d0d5dd}
.arrowhead{fill:#5d6675}
.arrowhead.hl{fill:#d0d5dd}
.node text{fill:#e4e7ec}
.legend text,.caption{fill:#98a2b3}
.state-success rect{fill:#123322;stroke:#3fbf6c}
.state-failure rect{fill:#3d1614;stroke:#f0574b}
.state-running rect{fill:#142a4d;stroke:#5b93f0}
.state-queued rect{fill:#3a2c0c;stroke:#e9a93a}
.state-disabled rect{fill:#23272e;stroke:#5d6675}
.state-disabled text{fill:#8a93a3}
.state-never-run rect{fill:#1d2128;stroke:#7a8496}
}
</style>"#;

/// A coordinate rounded to a tenth of a pixel, without trailing zeros: plenty on screen, and it keeps big
/// drawings compact.
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0).round() as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let (whole, frac) = (tenths.abs() / 10, tenths.abs() % 10);
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            write!(f, "{sign}{whole}.{frac}")
        }
    }
}

/// Append `s` escaped for XML text and attributes; characters XML 1.0 forbids become U+FFFD.
fn push_xml_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// Append `s` percent-encoded as one path segment: every byte but the unreserved characters of RFC 3986.
fn push_url_encoded(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
