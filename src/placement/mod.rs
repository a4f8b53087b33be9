//! Placement: decides which worker a task goes to, from the workers' free resources and the job's Chronos constraints.
//!
//! Everything here is pure: the engine hands in a snapshot of the workers as [`Offer`]s and gets back an index or the
//! reason the task has to wait, which it shows to users as is. Constraints are compiled once with
//! [`Constraint::compile`] so that a bad operator or regular expression is rejected with a 400 before the job is stored.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;

#[cfg(test)]
mod tests;

/// Resources are counted in whole thousandths (milli-cpus, thousandths of a MB): sums and
/// differences are exact integers, so twenty tasks of 0.1 cpu use exactly 2 cpus, and what is in
/// use can never read above what was offered.
const UNITS_PER_ONE: f64 = 1000.0;

fn to_units(value: f64) -> i64 {
    // `as` saturates, and NaN becomes 0: no input can overflow the sums below.
    (value * UNITS_PER_ONE).round() as i64
}

fn from_units(units: i64) -> f64 {
    units as f64 / UNITS_PER_ONE
}

/// The name of the attribute every worker has unless it sets its own.
const HOSTNAME: &str = "hostname";

/// Why a constraint could not be compiled; the message is shown to users in an HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "constraint [{attribute:?}, {operator:?}, {value:?}]: unknown operator {operator:?}; use EQUALS, LIKE or UNLIKE"
    )]
    UnknownOperator {
        attribute: String,
        operator: String,
        value: String,
    },
    #[error("constraint [{attribute:?}, {operator:?}, {value:?}]: invalid regular expression: {reason}")]
    InvalidRegex {
        attribute: String,
        operator: String,
        value: String,
        reason: String,
    },
}

/// Cpus, memory (MB) and disk (MB), as Chronos jobs state them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
}

impl Resources {
    /// Whether these resources fit in `free` on all three dimensions.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.units()
            .iter()
            .zip(free.units())
            .all(|(need, free)| *need <= free)
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        let [a, b] = [self.units(), other.units()];
        Resources::from_units([0, 1, 2].map(|i| a[i].saturating_add(b[i])))
    }

    /// The difference, floored at zero so that an over-committed worker reads as full rather than negative.
    pub fn minus(&self, other: &Resources) -> Resources {
        let [a, b] = [self.units(), other.units()];
        Resources::from_units([0, 1, 2].map(|i| a[i].saturating_sub(b[i]).max(0)))
    }

    fn units(&self) -> [i64; 3] {
        [to_units(self.cpus), to_units(self.mem), to_units(self.disk)]
    }

    fn from_units([cpus, mem, disk]: [i64; 3]) -> Resources {
        Resources {
            cpus: from_units(cpus),
            mem: from_units(mem),
            disk: from_units(disk),
        }
    }

    fn as_array(&self) -> [f64; 3] {
        [self.cpus, self.mem, self.disk]
    }
}

/// Reads like `2 cpus, 128 MB mem, 256 MB disk`.
impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = number(self.cpus);
        let unit = if cpus == "1" { "cpu" } else { "cpus" };
        write!(
            f,
            "{cpus} {unit}, {} MB mem, {} MB disk",
            number(self.mem),
            number(self.disk)
        )
    }
}

/// Formats a quantity for people: at most three decimals and no trailing zeros, so float noise never shows.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text.as_str()
    };
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// The Chronos constraint operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    Like,
    Unlike,
}

impl Operator {
    /// The name as Chronos writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "EQUALS",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compiled constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    attribute: String,
    operator: Operator,
    value: String,
    /// The value anchored at both ends, for `Like` and `Unlike`.
    regex: Option<Regex>,
}

/// Two constraints are equal when they were compiled from the same text; the regex follows from it.
impl PartialEq for Constraint {
    fn eq(&self, other: &Constraint) -> bool {
        self.attribute == other.attribute && self.operator == other.operator && self.value == other.value
    }
}

impl Eq for Constraint {}

impl Constraint {
    /// Compiles `[attribute, operator, value]` as Chronos writes it.
    ///
    /// Operators are matched exactly (upper case), as Chronos does, so a job accepted here is accepted there too.
    pub fn compile(attribute: &str, operator: &str, value: &str) -> Result<Constraint, Error> {
        let op = match operator {
            "EQUALS" => Operator::Equals,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            _ => {
                return Err(Error::UnknownOperator {
                    attribute: attribute.to_owned(),
                    operator: operator.to_owned(),
                    value: value.to_owned(),
                });
            }
        };
        let regex = match op {
            Operator::Equals => None,
            Operator::Like | Operator::Unlike => {
                Some(whole_match_regex(value).map_err(|reason| Error::InvalidRegex {
                    attribute: attribute.to_owned(),
                    operator: operator.to_owned(),
                    value: value.to_owned(),
                    reason,
                })?)
            }
        };
        Ok(Constraint {
            attribute: attribute.to_owned(),
            operator: op,
            value: value.to_owned(),
            regex,
        })
    }

    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a worker with these attributes (hostname already added, see `attributes_with_hostname`) satisfies it.
    pub fn matches(&self, attributes: &[(String, String)]) -> bool {
        self.matches_pairs(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The Chronos rules, over any sequence of attributes so that placement need not copy them for every worker.
    fn matches_pairs<'a>(&self, mut attributes: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        match self.operator {
            // EQUALS looks at every value the attribute has.
            Operator::Equals => attributes.any(|(k, v)| k == self.attribute && v == self.value),
            // LIKE and UNLIKE look at the first value only, and both are false when the attribute is missing.
            Operator::Like | Operator::Unlike => {
                let Some((_, v)) = attributes.find(|(k, _)| *k == self.attribute) else {
                    return false;
                };
                let matched = self.regex.as_ref().is_some_and(|re| re.is_match(v));
                matched == (self.operator == Operator::Like)
            }
        }
    }
}

/// Reads like `["rack", "EQUALS", "rack-1"]`, the way the job's JSON writes it.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:?}, {:?}, {:?}]",
            self.attribute,
            self.operator.as_str(),
            self.value
        )
    }
}

/// Compiles `pattern` so that it must match the whole value, like Java's `Matcher.matches()`.
///
/// The pattern is first compiled on its own: that both checks it is balanced, so wrapping it cannot change its meaning
/// (`a)|(b` would otherwise become an unanchored alternation), and makes the error talk about the user's text.
fn whole_match_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|err| regex_reason(&err))?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(|err| regex_reason(&err))
}

/// One line from the regex crate's error, which otherwise spans several lines with a caret diagram.
fn regex_reason(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .map_or_else(
                || text.split_whitespace().collect::<Vec<_>>().join(" "),
                str::to_owned,
            ),
        regex::Error::CompiledTooBig(_) => "the expression is too large once compiled".to_owned(),
        other => other.to_string(),
    }
}

/// Adds `hostname` unless the worker has an explicit `hostname` attribute.
pub fn attributes_with_hostname(hostname: &str, attributes: &[(String, String)]) -> Vec<(String, String)> {
    effective_attributes(hostname, attributes)
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The worker's attributes followed by the automatic `hostname` one when it has none, without copying.
fn effective_attributes<'a>(
    hostname: &'a str,
    attributes: &'a [(String, String)],
) -> impl Iterator<Item = (&'a str, &'a str)> + Clone {
    let explicit = attributes.iter().any(|(k, _)| k == HOSTNAME);
    attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain((!explicit).then_some((HOSTNAME, hostname)))
}

/// What a task asks of a worker besides resources and constraints: the kinds of work that not
/// every backend does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// A plain command on the worker's host (a job without a container).
    pub process: bool,
    /// Files fetched into a sandbox before the start (`fetch`, `uris`).
    pub fetch: bool,
}

/// The kinds of work a worker does. Agents and the built-in worker do everything; a cluster
/// engine such as Docker Swarm runs containers only, with no sandbox to fetch into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    pub processes: bool,
    pub fetch: bool,
}

impl Runs {
    /// Processes, containers and fetch: agents and the built-in worker.
    pub const EVERYTHING: Runs = Runs {
        processes: true,
        fetch: true,
    };
    /// Containers without fetch: a cluster engine's nodes.
    pub const CONTAINERS: Runs = Runs {
        processes: false,
        fetch: false,
    };

    pub fn can(&self, needs: Needs) -> bool {
        (self.processes || !needs.process) && (self.fetch || !needs.fetch)
    }
}

/// One worker as placement sees it.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Worker name, unique among workers.
    pub worker: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    pub total: Resources,
    pub used: Resources,
    pub runs: Runs,
}

impl Offer {
    pub fn free(&self) -> Resources {
        self.total.minus(&self.used)
    }

    fn satisfies(&self, constraint: &Constraint) -> bool {
        constraint.matches_pairs(effective_attributes(&self.hostname, &self.attributes))
    }

    fn satisfies_all(&self, constraints: &[Constraint]) -> bool {
        constraints.iter().all(|c| self.satisfies(c))
    }

    /// The highest share of any resource in use once `need` is placed here; lower means emptier.
    fn load_after(&self, need: &Resources) -> f64 {
        let after = self.used.plus(need).as_array();
        let total = self.total.as_array();
        after
            .iter()
            .zip(total)
            .map(|(&after, total)| {
                if total > 0.0 {
                    after / total
                } else if after <= 0.0 {
                    // A resource the worker does not have and the task does not use says nothing about load.
                    0.0
                } else {
                    f64::INFINITY
                }
            })
            .fold(0.0, f64::max)
    }
}

/// Why a task could not be placed right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Unplaceable {
    /// No worker is connected, or none takes new tasks (a paused Swarm node keeps its own).
    NoWorkers,
    /// Workers are connected, but none does this kind of work (a command without a container,
    /// or fetch, where only a cluster engine's nodes are).
    Unsupported { needs: Needs },
    /// No worker satisfies the constraints (the text names the first unmet constraint).
    NoMatchingWorker { constraint: String },
    /// Some workers match but none has the resources free; `largest_free` is the most any single matching worker has.
    NoCapacity {
        need: Resources,
        largest_free: Resources,
    },
    /// The task needs more than any matching worker has in total: it can never run until a bigger worker joins.
    TooLarge {
        need: Resources,
        largest_total: Resources,
    },
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::NoWorkers => {
                f.write_str("waiting for a worker: none is connected and taking new tasks")
            }
            Unplaceable::Unsupported { needs } => {
                let what = match (needs.process, needs.fetch) {
                    (true, true) => "runs commands without a container and fetches files",
                    (true, false) => "runs commands without a container",
                    _ => "fetches files",
                };
                write!(
                    f,
                    "waiting for a worker that {what} (an agent or the built-in worker); the connected ones run containers only"
                )
            }
            Unplaceable::NoMatchingWorker { constraint } => {
                write!(
                    f,
                    "waiting for a matching worker: no worker satisfies constraint {constraint}"
                )
            }
            Unplaceable::NoCapacity { need, largest_free } => write!(
                f,
                "waiting for resources: needs {need}; the most free on a matching worker is {largest_free}"
            ),
            Unplaceable::TooLarge { need, largest_total } => write!(
                f,
                "waiting for a larger worker: needs {need}; the largest matching worker has {largest_total} in total"
            ),
        }
    }
}

/// Chooses the worker for a task: index into `offers`, or why none.
///
/// Among the workers that satisfy every constraint and have `need` free, the one left least loaded wins (lowest
/// highest share of cpus, mem or disk in use after placing), which spreads tasks; ties go to the worker name that
/// sorts first, then to the earlier offer, so the same inputs always give the same answer. Only
/// workers that do the kind of work the task `needs` count at all.
pub fn place(
    need: &Resources,
    needs: Needs,
    constraints: &[Constraint],
    offers: &[Offer],
) -> Result<usize, Unplaceable> {
    if offers.is_empty() {
        return Err(Unplaceable::NoWorkers);
    }
    let matching: Vec<usize> = (0..offers.len())
        .filter(|&i| offers[i].runs.can(needs) && offers[i].satisfies_all(constraints))
        .collect();
    if matching.is_empty() {
        // Only now, on the way out, are the capable workers gathered to say why.
        let capable: Vec<&Offer> = offers.iter().filter(|o| o.runs.can(needs)).collect();
        if capable.is_empty() {
            return Err(Unplaceable::Unsupported { needs });
        }
        return Err(Unplaceable::NoMatchingWorker {
            constraint: unmet_constraint(constraints, &capable),
        });
    }

    let best = matching
        .iter()
        .copied()
        .filter(|&i| need.fits_in(&offers[i].free()))
        .map(|i| (offers[i].load_after(need), i))
        .min_by(|(load_a, a), (load_b, b)| {
            load_a
                .total_cmp(load_b)
                .then_with(|| offers[*a].worker.cmp(&offers[*b].worker))
                .then_with(|| a.cmp(b))
        });
    if let Some((_, index)) = best {
        return Ok(index);
    }

    let totals = matching.iter().map(|&i| offers[i].total);
    if !totals.clone().any(|total| need.fits_in(&total)) {
        return Err(Unplaceable::TooLarge {
            need: *need,
            largest_total: closest_fit(need, totals),
        });
    }
    Err(Unplaceable::NoCapacity {
        need: *need,
        largest_free: closest_fit(need, matching.iter().map(|&i| offers[i].free())),
    })
}

/// Names the constraint that keeps every worker out, for a task no worker matches.
///
/// A constraint that no worker satisfies on its own is the clearest thing to name. When each one is satisfiable alone
/// but no worker satisfies them all, the constraints are applied in order and the one that rules out the last workers
/// is named, with a note that it is the combination that fails.
fn unmet_constraint(constraints: &[Constraint], offers: &[&Offer]) -> String {
    if let Some(alone) = constraints
        .iter()
        .find(|c| !offers.iter().any(|offer| offer.satisfies(c)))
    {
        return alone.to_string();
    }
    let mut remaining: Vec<&Offer> = offers.to_vec();
    for constraint in constraints {
        remaining.retain(|offer| offer.satisfies(constraint));
        if remaining.is_empty() {
            return format!("{constraint} together with the constraints before it");
        }
    }
    // Only reached if a worker in fact satisfies them all, which the caller has ruled out; say something true anyway.
    let all: Vec<String> = constraints.iter().map(Constraint::to_string).collect();
    format!("[{}]", all.join(", "))
}

/// Of several workers' resources (free or total), the one that comes closest to holding `need`.
///
/// A single worker's figures are reported, not a maximum per resource across workers, so the message always shows a
/// resource that falls short. Closest means covering the largest fraction of the scarcest needed resource, then the
/// largest fraction of the need overall; the first such worker wins a tie.
fn closest_fit(need: &Resources, candidates: impl Iterator<Item = Resources>) -> Resources {
    let need = need.as_array();
    let score = |have: &Resources| {
        let ratios: Vec<f64> = have
            .as_array()
            .iter()
            .zip(need)
            .filter(|(_, need)| *need > 0.0)
            .map(|(have, need)| (have / need).min(1.0))
            .collect();
        let scarcest = ratios.iter().copied().fold(1.0, f64::min);
        let overall: f64 = ratios.iter().sum();
        (scarcest, overall)
    };
    let mut best: Option<(Resources, (f64, f64))> = None;
    for candidate in candidates {
        let candidate_score = score(&candidate);
        let better = match &best {
            None => true,
            Some((_, best_score)) => {
                candidate_score
                    .0
                    .total_cmp(&best_score.0)
                    .then(candidate_score.1.total_cmp(&best_score.1))
                    == Ordering::Greater
            }
        };
        if better {
            best = Some((candidate, candidate_score));
        }
    }
    best.map(|(resources, _)| resources).unwrap_or_default()
}
