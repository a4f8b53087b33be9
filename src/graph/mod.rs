//! The job dependency graph: which jobs depend on which, kept acyclic, and the
//! per-edge flags that decide when a dependent job is ready to run.
//!
//! An edge `parent -> child` means that `child` depends on `parent`. Scheduled
//! jobs have no parents; dependent jobs have at least one. Every change that
//! would introduce a cycle, a self-parent or an unknown parent is rejected as a
//! whole and leaves the graph exactly as it was.
//!
//! Readiness replaces Chronos' per-job counters with one `satisfied` flag per
//! edge. A parent's success satisfies all of its outgoing edges, a child is
//! ready once all of its incoming edges are satisfied, and a child starting a
//! run resets its incoming edges. So a child runs once every parent has
//! succeeded since the child's last run. The flags are persisted by the caller
//! through [`JobGraph::satisfied_parents`] and [`JobGraph::restore_satisfied`].
//!
//! The module is pure: no I/O, no clock, no async. The public API speaks job
//! names only; petgraph is an implementation detail.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use petgraph::Direction::{self, Incoming, Outgoing};
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};

pub mod layout;

#[cfg(test)]
mod tests;

/// A reason why a set of parents is not acceptable for a job.
///
/// The messages are shown to users as the body of an HTTP 400 response, so they
/// are complete sentences. The derived ordering lets validation report problems
/// sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Error {
    /// `child` names a parent job that does not exist.
    #[error("job '{child}' names parent '{parent}', which does not exist")]
    UnknownParent { child: String, parent: String },
    /// `job` names itself as one of its parents.
    #[error("job '{job}' cannot be its own parent")]
    SelfParent { job: String },
    /// The new parents would close a cycle. `path` starts and ends with the job
    /// whose parents were being changed, e.g. `a -> b -> c -> a`, and every
    /// arrow points from a parent to its child.
    #[error(
        "adding parents to '{}' would create a cycle: {}",
        path.first().map_or("", String::as_str),
        path.join(" -> ")
    )]
    Cycle { path: Vec<String> },
    /// A dependent job was given an empty list of parents.
    #[error("dependent job '{job}' must have at least one parent")]
    NoParents { job: String },
}

/// A vertex: the job name plus a sequence number, because StableGraph reuses
/// freed slots and its indices therefore do not reflect insertion order.
#[derive(Debug, Clone)]
struct Vertex {
    name: String,
    seq: u64,
}

/// An edge `parent -> child`: its readiness flag plus a sequence number that
/// records insertion order for the same reason as [`Vertex::seq`].
#[derive(Debug, Clone, Copy)]
struct Link {
    seq: u64,
    satisfied: bool,
}

/// The dependency graph of all jobs, addressed by job name.
#[derive(Debug, Default, Clone)]
pub struct JobGraph {
    graph: StableDiGraph<Vertex, Link>,
    index: HashMap<String, NodeIndex>,
    /// The next sequence number; vertices and edges share one counter since
    /// only the relative order within each kind matters.
    next_seq: u64,
}

impl JobGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of jobs.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the graph holds no jobs.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether a job with this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Add a vertex (no-op if present).
    pub fn add_job(&mut self, name: &str) {
        if self.index.contains_key(name) {
            return;
        }
        let seq = self.bump_seq();
        let node = self.graph.add_node(Vertex {
            name: name.to_owned(),
            seq,
        });
        self.index.insert(name.to_owned(), node);
    }

    /// Check that `child` may have exactly these parents (all exist, not itself,
    /// no cycle, non-empty), without changing anything. `child` need not exist
    /// yet (a new job).
    ///
    /// Every problem is reported, sorted and without duplicates.
    pub fn check_parents(&self, child: &str, parents: &[String]) -> Result<(), Vec<Error>> {
        into_result(self.problems(child, parents, true))
    }

    /// Replace the parents of `child` (adding the vertex if needed) after the
    /// same checks as [`check_parents`](Self::check_parents); atomic.
    ///
    /// An empty slice is allowed here and makes the job a root (used when a
    /// dependent job becomes scheduled). Edges to parents that remain keep
    /// their flags; edges to new parents start unsatisfied. Duplicate names in
    /// `parents` count once.
    pub fn set_parents(&mut self, child: &str, parents: &[String]) -> Result<(), Vec<Error>> {
        into_result(self.problems(child, parents, false))?;

        self.add_job(child);
        let node = self.index[child];

        // Validation guarantees that every parent exists; dedupe while keeping
        // the caller's order so that new edges are inserted in that order.
        let mut wanted = Vec::with_capacity(parents.len());
        let mut wanted_set = HashSet::with_capacity(parents.len());
        for parent in parents {
            let p = self.index[parent.as_str()];
            if wanted_set.insert(p) {
                wanted.push(p);
            }
        }

        let existing: Vec<(EdgeIndex, NodeIndex)> = self
            .graph
            .edges_directed(node, Incoming)
            .map(|e| (e.id(), e.source()))
            .collect();
        let mut kept = HashSet::with_capacity(existing.len());
        for (edge, source) in existing {
            if wanted_set.contains(&source) {
                kept.insert(source);
            } else {
                self.graph.remove_edge(edge);
            }
        }
        for p in wanted {
            if !kept.contains(&p) {
                let seq = self.bump_seq();
                self.graph.add_edge(
                    p,
                    node,
                    Link {
                        seq,
                        satisfied: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// Remove a job and all its edges. Returns its former children (in
    /// insertion order); an unknown name returns nothing.
    pub fn remove_job(&mut self, name: &str) -> Vec<String> {
        let Some(node) = self.index.remove(name) else {
            return Vec::new();
        };
        let children = self.names_of(self.links(node, Outgoing));
        self.graph.remove_node(node);
        children
    }

    /// The parents of `name`, in insertion order of the edges.
    pub fn parents(&self, name: &str) -> Vec<String> {
        self.neighbours(name, Incoming)
    }

    /// The children of `name`, in insertion order of the edges.
    pub fn children(&self, name: &str) -> Vec<String> {
        self.neighbours(name, Outgoing)
    }

    /// Mark every edge out of `parent` satisfied; return the children that are
    /// now ready (all incoming edges satisfied), in insertion order of the
    /// edges.
    ///
    /// A child that was already ready is returned again; deciding whether it
    /// is already queued or running is up to the caller.
    pub fn record_success(&mut self, parent: &str) -> Vec<String> {
        let Some(node) = self.node(parent) else {
            return Vec::new();
        };
        let links = self.links(node, Outgoing);
        for &(_, edge, _) in &links {
            self.graph[edge].satisfied = true;
        }
        links
            .into_iter()
            .filter(|&(_, _, child)| self.is_ready(child))
            .map(|(_, _, child)| self.graph[child].name.clone())
            .collect()
    }

    /// Reset the edges into `child` (the child started a run).
    pub fn reset(&mut self, child: &str) {
        self.set_incoming_flags(child, |_| false);
    }

    /// The parents whose edge into `child` is satisfied (for persistence),
    /// insertion order.
    pub fn satisfied_parents(&self, child: &str) -> Vec<String> {
        let Some(node) = self.node(child) else {
            return Vec::new();
        };
        let mut links = self.links(node, Incoming);
        links.retain(|&(_, edge, _)| self.graph[edge].satisfied);
        self.names_of(links)
    }

    /// Restore persisted flags after a restart (unknown names are ignored).
    ///
    /// Afterwards exactly the edges from the named parents into `child` are
    /// satisfied, so a round trip through
    /// [`satisfied_parents`](Self::satisfied_parents) is lossless.
    pub fn restore_satisfied(&mut self, child: &str, parents: &[String]) {
        let wanted: HashSet<&str> = parents.iter().map(String::as_str).collect();
        self.set_incoming_flags(child, |name| wanted.contains(name));
    }

    /// Job names in insertion order.
    pub fn names(&self) -> Vec<String> {
        self.vertices_in_order()
            .into_iter()
            .map(|n| self.graph[n].name.clone())
            .collect()
    }

    /// Every edge as (parent, child) names, in insertion order.
    pub fn edges(&self) -> Vec<(String, String)> {
        self.edges_in_order()
            .into_iter()
            .map(|(s, t)| (self.graph[s].name.clone(), self.graph[t].name.clone()))
            .collect()
    }

    /// Chronos' DOT export, byte for byte.
    ///
    /// Vertices get ids 1, 2, 3… in insertion order, fresh on every call, so a
    /// removed job leaves no gap; edges follow in insertion order.
    pub fn to_dot(&self) -> String {
        let vertices = self.vertices_in_order();
        let edges = self.edges_in_order();

        let digits = decimal_digits(vertices.len());
        let names: usize = vertices.iter().map(|&n| self.graph[n].name.len()).sum();
        // `  <id> [ label="<name>" ];\n` is 17 bytes plus id and name;
        // `  <id> -> <id>;\n` is 8 bytes plus two ids.
        let capacity = "digraph G {\n}\n".len()
            + names
            + vertices.len() * (17 + digits)
            + edges.len() * (8 + 2 * digits);
        let mut out = String::with_capacity(capacity);

        // Dense ids by slot; slots of removed vertices simply stay unused.
        let mut ids = vec![0usize; self.graph.node_bound()];
        out.push_str("digraph G {\n");
        for (i, &node) in vertices.iter().enumerate() {
            let id = i + 1;
            ids[node.index()] = id;
            // Writing into a String cannot fail, so the fmt::Result is moot.
            let _ = write!(out, "  {id} [ label=\"");
            push_escaped(&mut out, &self.graph[node].name);
            out.push_str("\" ];\n");
        }
        for (source, target) in edges {
            let _ = writeln!(out, "  {} -> {};", ids[source.index()], ids[target.index()]);
        }
        out.push_str("}\n");
        out
    }

    /// Chronos' CSV export; `node_state(name)` gives (lastRunStatus,
    /// currentState), e.g. ("success", "idle").
    ///
    /// One `node,<name>,<lastRunStatus>,<currentState>` line per job in
    /// insertion order, then one `link,<parent>,<child>` line per edge in
    /// insertion order, with no header.
    pub fn to_csv(&self, node_state: impl Fn(&str) -> (String, String)) -> String {
        let vertices = self.vertices_in_order();
        let edges = self.edges_in_order();
        let mut out = String::new();
        for node in vertices {
            let name = &self.graph[node].name;
            let (status, state) = node_state(name);
            let _ = writeln!(out, "node,{name},{status},{state}");
        }
        for (source, target) in edges {
            let _ = writeln!(
                out,
                "link,{},{}",
                self.graph[source].name, self.graph[target].name
            );
        }
        out
    }

    fn bump_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn node(&self, name: &str) -> Option<NodeIndex> {
        self.index.get(name).copied()
    }

    /// The edges of `node` in one direction as (seq, edge, other end), sorted
    /// into insertion order.
    fn links(&self, node: NodeIndex, direction: Direction) -> Vec<(u64, EdgeIndex, NodeIndex)> {
        let mut links: Vec<_> = self
            .graph
            .edges_directed(node, direction)
            .map(|e| {
                let other = match direction {
                    Outgoing => e.target(),
                    Incoming => e.source(),
                };
                (e.weight().seq, e.id(), other)
            })
            .collect();
        links.sort_unstable_by_key(|&(seq, _, _)| seq);
        links
    }

    fn names_of(&self, links: Vec<(u64, EdgeIndex, NodeIndex)>) -> Vec<String> {
        links
            .into_iter()
            .map(|(_, _, other)| self.graph[other].name.clone())
            .collect()
    }

    fn neighbours(&self, name: &str, direction: Direction) -> Vec<String> {
        match self.node(name) {
            Some(node) => self.names_of(self.links(node, direction)),
            None => Vec::new(),
        }
    }

    fn is_ready(&self, node: NodeIndex) -> bool {
        self.graph
            .edges_directed(node, Incoming)
            .all(|e| e.weight().satisfied)
    }

    /// Set each edge into `child` to `flag(parent name)`.
    fn set_incoming_flags(&mut self, child: &str, flag: impl Fn(&str) -> bool) {
        let Some(node) = self.node(child) else {
            return;
        };
        let edges: Vec<(EdgeIndex, bool)> = self
            .graph
            .edges_directed(node, Incoming)
            .map(|e| (e.id(), flag(&self.graph[e.source()].name)))
            .collect();
        for (edge, satisfied) in edges {
            self.graph[edge].satisfied = satisfied;
        }
    }

    fn vertices_in_order(&self) -> Vec<NodeIndex> {
        let mut vertices: Vec<NodeIndex> = self.graph.node_indices().collect();
        vertices.sort_unstable_by_key(|&n| self.graph[n].seq);
        vertices
    }

    fn edges_in_order(&self) -> Vec<(NodeIndex, NodeIndex)> {
        let mut edges: Vec<(u64, NodeIndex, NodeIndex)> = self
            .graph
            .edge_references()
            .map(|e| (e.weight().seq, e.source(), e.target()))
            .collect();
        edges.sort_unstable_by_key(|&(seq, _, _)| seq);
        edges.into_iter().map(|(_, s, t)| (s, t)).collect()
    }

    /// Every reason why `child` may not have exactly `parents`, sorted and
    /// deduplicated. An empty list is only a problem when `require_parents`.
    fn problems(&self, child: &str, parents: &[String], require_parents: bool) -> Vec<Error> {
        let mut problems = Vec::new();
        if require_parents && parents.is_empty() {
            problems.push(Error::NoParents {
                job: child.to_owned(),
            });
        }
        for parent in parents {
            if parent == child {
                problems.push(Error::SelfParent {
                    job: child.to_owned(),
                });
            } else if !self.contains(parent) {
                problems.push(Error::UnknownParent {
                    child: child.to_owned(),
                    parent: parent.clone(),
                });
            }
        }
        problems.extend(self.cycles(child, parents));
        problems.sort_unstable();
        problems.dedup();
        problems
    }

    /// One [`Error::Cycle`] for every existing parent that `child` already
    /// reaches, because the new edge `parent -> child` would close that path.
    ///
    /// A single breadth-first search from `child` along outgoing edges costs
    /// O(V+E) at worst, finds all such parents at once and yields shortest,
    /// hence most readable, paths. Visiting children in insertion order keeps
    /// the reported paths deterministic.
    fn cycles(&self, child: &str, parents: &[String]) -> Vec<Error> {
        // A job that does not exist yet has no children, so it cannot close a
        // cycle.
        let Some(start) = self.node(child) else {
            return Vec::new();
        };
        let mut targets: HashSet<NodeIndex> = parents
            .iter()
            .filter_map(|p| self.node(p))
            .filter(|&p| p != start)
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }

        // The BFS tree: each visited vertex maps to the vertex it was reached
        // from. A map keeps the cost proportional to what is explored.
        let mut reached_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        reached_from.insert(start, start);
        let mut queue = VecDeque::from([start]);
        let mut found = Vec::new();
        'search: while let Some(node) = queue.pop_front() {
            for (_, _, next) in self.links(node, Outgoing) {
                if reached_from.contains_key(&next) {
                    continue;
                }
                reached_from.insert(next, node);
                if targets.remove(&next) {
                    found.push(next);
                    if targets.is_empty() {
                        break 'search;
                    }
                }
                queue.push_back(next);
            }
        }

        found
            .into_iter()
            .map(|parent| {
                let mut path = vec![child.to_owned()];
                let mut node = parent;
                while node != start {
                    path.push(self.graph[node].name.clone());
                    node = reached_from[&node];
                }
                path.push(child.to_owned());
                path.reverse();
                Error::Cycle { path }
            })
            .collect()
    }
}

fn into_result(problems: Vec<Error>) -> Result<(), Vec<Error>> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Append `s` with `"` and `\` backslash-escaped, as DOT's quoted strings need.
/// Job names never contain either, but a malformed name must not break the
/// output.
fn push_escaped(out: &mut String, s: &str) {
    if !s.contains(['"', '\\']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}
