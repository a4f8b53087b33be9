//! Fuzzes placement constraints: `placement::Constraint::compile` (Chronos' EQUALS, LIKE and
//! UNLIKE, with user regular expressions) and `placement::place` over arbitrary workers. A task is
//! only ever placed on a worker that does its kind of work, satisfies every constraint and has the
//! resources free.
//!
//! Input: structured, read with `arbitrary`: up to four constraints, a need, up to four offers.
//! Compiling a regular expression costs a thousand times what placing does, so most constraint
//! values come from a fixed list, compiled once and kept; one in forty is arbitrary text, compiled
//! afresh (the regex crate's own parser is fuzzed upstream).
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use kairos::placement::{self, Constraint, Offer, Resources};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Attribute names that make constraints and offers meet more often than random text would.
const ATTRIBUTES: [&str; 4] = ["hostname", "rack", "zone", "os"];
const OPERATORS: [&str; 3] = ["EQUALS", "LIKE", "UNLIKE"];
/// Values as Chronos jobs write them: plain names and the patterns LIKE and UNLIKE take.
const VALUES: [&str; 10] = [
    "r1",
    "h1",
    "",
    "r[0-9]+",
    ".*",
    "h.*|r1",
    "(a|b)c?",
    "[a-z]{2}-[0-9]",
    "r1)|(h1",
    "\\d+",
];

thread_local! {
    /// Constraints compiled from the known values, by (attribute, operator, value).
    static COMPILED: RefCell<HashMap<(String, String, String), Option<Constraint>>> = RefCell::new(HashMap::new());
}

/// Compiles a constraint; a known triple only once.
fn compile(attribute: String, operator: String, value: String, known: bool) -> Option<Constraint> {
    if !known {
        return Constraint::compile(&attribute, &operator, &value).ok();
    }
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 4096 {
            cache.clear();
        }
        cache
            .entry((attribute, operator, value))
            .or_insert_with_key(|(a, o, v)| Constraint::compile(a, o, v).ok())
            .clone()
    })
}

fn text(u: &mut Unstructured<'_>, known: &[&str]) -> Result<String> {
    if u.ratio(15, 16)? {
        Ok((*u.choose(known)?).to_owned())
    } else {
        u.arbitrary()
    }
}

/// A resource figure: any float (NaN, infinities, negatives) from a worker, as the agent
/// protocol allows, or a small whole one.
fn amount(u: &mut Unstructured<'_>) -> Result<f64> {
    if u.ratio(1, 2)? {
        Ok(f64::from(u.int_in_range(0u8..=8)?))
    } else {
        u.arbitrary()
    }
}

fn resources(u: &mut Unstructured<'_>) -> Result<Resources> {
    Ok(Resources {
        cpus: amount(u)?,
        mem: amount(u)?,
        disk: amount(u)?,
    })
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut constraints = Vec::new();
    for _ in 0..u.int_in_range(0u8..=4)? {
        let attribute = text(u, &ATTRIBUTES)?;
        let operator = text(u, &OPERATORS)?;
        let known = !u.ratio(1, 40)?;
        let value = if known {
            (*u.choose(&VALUES)?).to_owned()
        } else {
            u.arbitrary()?
        };
        if let Some(constraint) = compile(attribute, operator, value, known) {
            let _ = constraint.to_string();
            constraints.push(constraint);
        }
    }
    // A job's need is what the API accepts: finite and not negative.
    let need = Resources {
        cpus: f64::from(u.int_in_range(0u16..=2000)?) / 100.0,
        mem: f64::from(u.int_in_range(0u16..=2000)?),
        disk: f64::from(u.int_in_range(0u16..=2000)?),
    };
    let mut offers = Vec::new();
    for index in 0..u.int_in_range(0u8..=4)? {
        let mut attributes = Vec::new();
        for _ in 0..u.int_in_range(0u8..=4)? {
            attributes.push((text(u, &ATTRIBUTES)?, text(u, &VALUES)?));
        }
        offers.push(Offer {
            worker: format!("w{index}"),
            hostname: text(u, &VALUES)?,
            attributes,
            total: resources(u)?,
            used: resources(u)?,
            runs: placement::Runs {
                processes: u.arbitrary()?,
                fetch: u.arbitrary()?,
            },
        });
    }
    let needs = placement::Needs {
        process: u.arbitrary()?,
        fetch: u.arbitrary()?,
    };
    match placement::place(&need, needs, &constraints, &offers) {
        Ok(index) => {
            let offer = &offers[index];
            assert!(offer.runs.can(needs), "placed on a worker that does not do this work");
            let attributes = placement::attributes_with_hostname(&offer.hostname, &offer.attributes);
            assert!(
                constraints.iter().all(|c| c.matches(&attributes)),
                "placed against a constraint"
            );
            assert!(need.fits_in(&offer.free()), "placed on a worker without room");
        }
        Err(why) => {
            let _ = why.to_string();
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
