//! `regate audit verify FILE...`: check the decision log's hash chain ([`super::chain`])
//! across files in the order given, and name the first line where it breaks.
//!
//! A break is a line that is not a chained record, a `seq` that skips (lines deleted) or goes
//! back (lines reordered or repeated), a `chain` that does not follow from the line before
//! (a line edited or moved), a checkpoint that links to another chain than the line before
//! it, or an `--anchor` that the log does not hold. A log that starts mid-chain, or at a
//! checkpoint that links to lines before it, and a new chain after chained lines, are breaks
//! unless `--allow-new-chain`, then warnings. A line cut short by a regate killed while
//! writing it is a warning (at the very end, or followed by the checkpoint of the restart
//! that links past it). Exit 0 intact, 1 broken, 2 unreadable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::chain::{self, Link};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the decision log's hash chain across FILEs, in order; exit 1 at the first break.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Decision log files, oldest first.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// A chain head kept off the log (from regate's stderr or /status), `SEQ:CHAIN`: the line
    /// with that seq must carry that chain (repeatable). An anchor past the end of the log
    /// shows that its tail was cut.
    #[arg(long = "anchor", value_name = "SEQ:CHAIN", value_parser = anchor)]
    anchors: Vec<Link>,
    /// Accept a log that begins mid-chain or at a restart's checkpoint (a file rotated by
    /// copying), and a new chain that begins after chained lines (regate restarted on stdout
    /// or on a new file). Without it these are breaks: they are what deleting the head of a
    /// log, or the lines before a restart, looks like. Either way they are reported.
    #[arg(long)]
    allow_new_chain: bool,
}

fn anchor(s: &str) -> Result<Link, String> {
    let bad = || format!("{s:?} is not SEQ:CHAIN (a number, a colon, 64 hex digits)");
    let (seq, chain) = s.split_once(':').ok_or_else(bad)?;
    let chain = chain.trim().to_ascii_lowercase();
    if chain.len() != 64 || !chain.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Link {
        seq: seq.trim().parse().map_err(|_| bad())?,
        chain,
    })
}

/// Run `regate audit ...`.
pub fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify(args) => verify_files(&args),
    }
}

/// Where a line is: file and 1-based line number.
struct At<'a> {
    file: &'a str,
    line: usize,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The walk along the chain, line by line.
#[derive(Default)]
struct Walk {
    /// The last line checked.
    prev: Option<Link>,
    /// A line that is not a chained record, waiting to see whether a linked restart follows.
    cut: Option<(String, usize, bool)>,
    records: u64,
    warnings: Vec<String>,
    anchors_seen: Vec<u64>,
    /// `--allow-new-chain`.
    allow_new_chain: bool,
    /// Anchors a line of their seq contradicted, by seq: where the first one was.
    contradicted: std::collections::BTreeMap<u64, String>,
}

fn verify_files(args: &VerifyArgs) -> ExitCode {
    let mut texts = Vec::with_capacity(args.files.len());
    for path in &args.files {
        match std::fs::read(path) {
            Ok(bytes) => texts.push((path.display().to_string(), bytes)),
            Err(e) => {
                eprintln!("regate: audit verify: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let mut walk = Walk {
        allow_new_chain: args.allow_new_chain,
        ..Walk::default()
    };
    for (name, bytes) in &texts {
        let records_before = walk.records;
        if let Err(broken) = walk.file(name, bytes, &args.anchors) {
            for w in &walk.warnings {
                println!("warning: {w}");
            }
            println!("broken: {broken}");
            return ExitCode::from(1);
        }
        println!(
            "{name}: {} records, up to seq {}",
            walk.records - records_before,
            walk.prev.as_ref().map_or(0, |l| l.seq)
        );
    }
    if let Some((file, line, false)) = &walk.cut {
        for w in &walk.warnings {
            println!("warning: {w}");
        }
        println!("broken: {file}:{line}: not a chained record");
        return ExitCode::from(1);
    }
    if let Some((file, line, true)) = &walk.cut {
        walk.warnings.push(format!(
            "{file}:{line}: the last line is incomplete (regate was stopped while writing it); \
             it is not checked"
        ));
    }
    for w in &walk.warnings {
        println!("warning: {w}");
    }
    let missing: Vec<&Link> = args
        .anchors
        .iter()
        .filter(|a| !walk.anchors_seen.contains(&a.seq))
        .collect();
    if let Some(at) = missing.iter().find_map(|a| walk.contradicted.get(&a.seq)) {
        println!("broken: {at}");
        return ExitCode::from(1);
    }
    if let Some(a) = missing.first() {
        println!(
            "broken: anchor seq {} is not in the log, which ends at seq {}: lines were cut",
            a.seq,
            walk.prev.as_ref().map_or(0, |l| l.seq)
        );
        return ExitCode::from(1);
    }
    match &walk.prev {
        Some(head) => println!(
            "intact: {} records, chain head seq {} {}",
            walk.records, head.seq, head.chain
        ),
        None => println!("intact: no records"),
    }
    ExitCode::SUCCESS
}

impl Walk {
    /// Check one file's lines; `Err` names the first break.
    fn file(&mut self, name: &str, bytes: &[u8], anchors: &[Link]) -> Result<(), String> {
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // A file ending in a newline splits into a last empty piece; one that does not ends
        // in an incomplete line.
        let complete_end = lines.last().is_some_and(|l| l.is_empty());
        if complete_end {
            lines.pop();
        }
        let count = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            let at = At {
                file: name,
                line: i + 1,
            };
            let unterminated = i + 1 == count && !complete_end;
            self.line(&at, line, unterminated, anchors)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        at: &At<'_>,
        line: &[u8],
        unterminated: bool,
        anchors: &[Link],
    ) -> Result<(), String> {
        let parsed = chain::split(line).and_then(|(canonical, chain)| {
            let record: serde_json::Value = serde_json::from_slice(line).ok()?;
            Some((canonical, chain.to_string(), record))
        });
        let Some((canonical, chain, record)) = parsed else {
            if let Some((file, line, _)) = &self.cut {
                return Err(format!("{file}:{line}: not a chained record"));
            }
            self.cut = Some((at.file.to_string(), at.line, unterminated));
            return Ok(());
        };
        let Some(seq) = record["seq"].as_u64() else {
            return Err(format!("{at}: the record has no seq"));
        };
        let checkpoint = record["event"] == "chain_checkpoint";
        let linked_to = record["previous_chain"].as_str();
        // A line cut short is only a crash's mark when the restart right after it links past.
        if let Some((file, line, _)) = self.cut.take() {
            let past = self.prev.as_ref().map(|l| l.chain.as_str());
            if !(checkpoint && linked_to == past) {
                return Err(format!("{file}:{line}: not a chained record"));
            }
            self.warnings.push(format!(
                "{file}:{line}: a line cut short (regate was stopped while writing it); the \
                 restart at {at} links past it"
            ));
        }
        let hashed_after = match (&self.prev, checkpoint) {
            (Some(prev), true) => match linked_to {
                Some(previous) if previous != prev.chain => {
                    return Err(format!(
                        "{at}: the checkpoint links to another chain than the line before it \
                         (lines deleted, or files out of order)"
                    ))
                }
                Some(_) => {
                    expect_seq(at, prev.seq, seq)?;
                    linked_to
                }
                None if self.allow_new_chain => {
                    self.warnings.push(format!(
                        "{at}: a new chain starts (regate started on a new file or on stdout); \
                         its link to the lines before is not proven"
                    ));
                    None
                }
                None => {
                    return Err(format!(
                        "{at}: a new chain starts after chained lines: lines before it may have \
                         been deleted (if regate was restarted on stdout or on a new file, \
                         --allow-new-chain accepts it)"
                    ))
                }
            },
            (Some(prev), false) => {
                expect_seq(at, prev.seq, seq)?;
                Some(prev.chain.as_str())
            }
            (None, true) => match linked_to {
                None => None,
                Some(_) if self.allow_new_chain => {
                    self.warnings.push(format!(
                        "{at}: the log starts at a checkpoint that links to earlier lines, at \
                         seq {seq}; the lines before it are not checked"
                    ));
                    linked_to
                }
                // Every restart on the same file writes one: cutting the head of a log up to
                // any restart must not pass for a log that starts there.
                Some(_) => {
                    return Err(format!(
                        "{at}: the log starts at a checkpoint that links to earlier lines \
                         (previous_chain is not null): lines before it may have been deleted \
                         (if the file was rotated by copying, --allow-new-chain accepts it)"
                    ))
                }
            },
            (None, false) if !self.allow_new_chain => {
                return Err(format!(
                    "{at}: the log starts mid-chain, at seq {seq}: its first lines may have been \
                     deleted (if the file was rotated by copying, --allow-new-chain accepts it)"
                ));
            }
            (None, false) => {
                self.warnings.push(format!(
                    "{at}: the log starts mid-chain, at seq {seq}; the lines before it are not \
                     checked"
                ));
                self.accept(seq, chain, anchors, at)?;
                return Ok(());
            }
        };
        if chain::link(hashed_after, &canonical) != chain {
            return Err(format!(
                "{at}: seq {seq}: its chain does not follow from the line before (this line \
                 was edited, or lines were moved)"
            ));
        }
        self.accept(seq, chain, anchors, at)
    }

    fn accept(
        &mut self,
        seq: u64,
        chain: String,
        anchors: &[Link],
        at: &At<'_>,
    ) -> Result<(), String> {
        for anchor in anchors.iter().filter(|a| a.seq == seq) {
            match anchor.chain == chain {
                true => self.anchors_seen.push(seq),
                // With --allow-new-chain, seq starts again in each chain: another chain's
                // line of the same seq may hold the anchor. The first contradiction is kept,
                // and is the break if no line holds the anchor.
                false if self.allow_new_chain => {
                    self.contradicted.entry(seq).or_insert_with(|| {
                        format!(
                            "{at}: seq {seq}: its chain is not the anchored {}",
                            anchor.chain
                        )
                    });
                }
                false => {
                    return Err(format!(
                        "{at}: seq {seq}: its chain is not the anchored {}",
                        anchor.chain
                    ))
                }
            }
        }
        self.records += 1;
        self.prev = Some(Link { seq, chain });
        Ok(())
    }
}

fn expect_seq(at: &At<'_>, prev: u64, seq: u64) -> Result<(), String> {
    let expected = prev + 1;
    if seq > expected {
        let missing = match seq - expected {
            1 => format!("seq {expected} is missing"),
            _ => format!("seq {expected} to {} are missing", seq - 1),
        };
        return Err(format!(
            "{at}: seq {seq} follows seq {prev}: {missing} (deleted or lost)"
        ));
    }
    if seq < expected {
        return Err(format!(
            "{at}: seq {seq} follows seq {prev}: lines out of order or repeated"
        ));
    }
    Ok(())
}
