//! `regate audit verify FILE...`: check the decision log's hash chain ([`crate::audit::chain`])
//! across files in the order given, and name the first line where it breaks.
//!
//! A break is a line that is not a chained record, a `seq` that skips (lines deleted) or goes
//! back (lines reordered or repeated), a `chain` that does not follow from the line before
//! (a line edited or moved), a checkpoint that links to another chain than the line before
//! it, or an `--anchor` that the log does not hold. A log that starts mid-chain, or at a
//! checkpoint that links to lines before it, and a new chain after chained lines, are breaks
//! unless `--allow-new-chain`, then warnings. With `--public-key`, a checkpoint without a
//! signature that key verifies ([`crate::audit::signing`]) is a break, and so is a log with no signed
//! checkpoint; the lines after the last signed one are counted as unsigned. A line cut short
//! by a regate killed while writing it is a warning (at the very end, or followed by the
//! checkpoint of the restart that links past it). Exit 0 intact, 1 broken, 2 unreadable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::audit::chain::{self, Link};
use crate::audit::signing::PublicKey;
use crate::cli::out::outln;

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
    /// The Ed25519 public key (PEM, `BEGIN PUBLIC KEY`) of regate's
    /// --decision-log-signing-key: every checkpoint must carry a signature it verifies, and
    /// the lines after the last signed checkpoint are reported as unsigned.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
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
    super::out::verdict(match command {
        AuditCommand::Verify(args) => verify_files(&args),
    })
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
    /// `--public-key`: checkpoints must be signed with its private half.
    key: Option<PublicKey>,
    /// The last signed checkpoint: where it is, and its seq.
    signed: Option<(String, u64)>,
    /// Lines checked since the last signed checkpoint of this chain (or since the start).
    unsigned: u64,
}

fn verify_files(args: &VerifyArgs) -> ExitCode {
    let key = match args.public_key.as_deref().map(PublicKey::load).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!(
                "regate: audit verify: --public-key: {}",
                crate::error::chain(&e)
            );
            return ExitCode::from(2);
        }
    };
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
        key,
        ..Walk::default()
    };
    for (name, bytes) in &texts {
        let records_before = walk.records;
        if let Err(broken) = walk.file(name, bytes, &args.anchors) {
            for w in &walk.warnings {
                outln!("warning: {w}");
            }
            outln!("broken: {broken}");
            return ExitCode::from(1);
        }
        outln!(
            "{name}: {} records, up to seq {}",
            walk.records - records_before,
            walk.prev.as_ref().map_or(0, |l| l.seq)
        );
    }
    if let Some((file, line, false)) = &walk.cut {
        for w in &walk.warnings {
            outln!("warning: {w}");
        }
        outln!("broken: {file}:{line}: not a chained record");
        return ExitCode::from(1);
    }
    if let Some((file, line, true)) = &walk.cut {
        walk.warnings.push(format!(
            "{file}:{line}: the last line is incomplete (regate was stopped while writing it); \
             it is not checked"
        ));
    }
    for w in &walk.warnings {
        outln!("warning: {w}");
    }
    let missing: Vec<&Link> = args
        .anchors
        .iter()
        .filter(|a| !walk.anchors_seen.contains(&a.seq))
        .collect();
    if let Some(at) = missing.iter().find_map(|a| walk.contradicted.get(&a.seq)) {
        outln!("broken: {at}");
        return ExitCode::from(1);
    }
    if let Some(a) = missing.first() {
        outln!(
            "broken: anchor seq {} is not in the log, which ends at seq {}: lines were cut",
            a.seq,
            walk.prev.as_ref().map_or(0, |l| l.seq)
        );
        return ExitCode::from(1);
    }
    if walk.key.is_some() {
        let Some((at, seq)) = &walk.signed else {
            outln!(
                "broken: no checkpoint in the log is signed: the public key proves nothing in it"
            );
            return ExitCode::from(1);
        };
        let unsigned = match walk.unsigned {
            0 => "no line after it is unsigned".to_string(),
            1 => "1 line after it is unsigned: whoever can write the file can change or cut \
                  it unseen"
                .to_string(),
            n => format!(
                "{} after it are unsigned: whoever can write the file can change or cut them \
                 unseen",
                count_lines(n)
            ),
        };
        outln!("signed: up to seq {seq}, the checkpoint at {at}; {unsigned}");
    }
    match &walk.prev {
        Some(head) => outln!(
            "intact: {} records, chain head seq {} {}",
            walk.records,
            head.seq,
            head.chain
        ),
        None => outln!("intact: no records"),
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
                    if self.key.is_some() && self.unsigned > 0 {
                        self.warnings.push(format!(
                            "{at}: {} before it, after the last signed checkpoint of their \
                             chain, no signature covers",
                            count_lines(self.unsigned)
                        ));
                    }
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
                self.accept(seq, chain, anchors, at, false)?;
                return Ok(());
            }
        };
        if chain::link(hashed_after, &canonical) != chain {
            return Err(format!(
                "{at}: seq {seq}: its chain does not follow from the line before (this line \
                 was edited, or lines were moved)"
            ));
        }
        let signed = match (&self.key, checkpoint) {
            (Some(key), true) => {
                check_signature(key, at, seq, linked_to, record["signature"].as_str())?;
                true
            }
            _ => false,
        };
        self.accept(seq, chain, anchors, at, signed)
    }

    /// Take a checked line as the chain's head; `signed`: a checkpoint whose signature the
    /// public key verified.
    fn accept(
        &mut self,
        seq: u64,
        chain: String,
        anchors: &[Link],
        at: &At<'_>,
        signed: bool,
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
        match signed {
            true => {
                self.signed = Some((at.to_string(), seq));
                self.unsigned = 0;
            }
            false => self.unsigned += 1,
        }
        Ok(())
    }
}

/// A checkpoint's signature, checked with `--public-key`: over its `seq` and the `chain` it
/// links to, so it fails when any line before it was changed and the chain recomputed.
fn check_signature(
    key: &PublicKey,
    at: &At<'_>,
    seq: u64,
    previous_chain: Option<&str>,
    signature: Option<&str>,
) -> Result<(), String> {
    match signature {
        None => Err(format!(
            "{at}: seq {seq}: the checkpoint is not signed (regate ran without \
             --decision-log-signing-key, or the line was rewritten)"
        )),
        Some(signature) if !key.verifies(seq, previous_chain, signature) => Err(format!(
            "{at}: seq {seq}: the checkpoint's signature does not verify with the public key \
             (lines before it were changed and the chain recomputed, or another key signed it)"
        )),
        Some(_) => Ok(()),
    }
}

/// `1 line`, `2 lines`.
fn count_lines(n: u64) -> String {
    match n {
        1 => "1 line".to_string(),
        n => format!("{n} lines"),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::signing::SigningKey;

    /// A log of `runs`, each a new chain: a checkpoint (signed with `key`, when `signed`) and
    /// `records` records after it.
    fn log(key: &SigningKey, runs: &[(bool, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (signed, records) in runs {
            let mut chain = chain::Chain::default();
            let signature = match signed {
                true => format!(r#","signature":"{}""#, key.sign(1, None)),
                false => String::new(),
            };
            let checkpoint =
                format!(r#"{{"event":"chain_checkpoint","previous_chain":null{signature}}}"#);
            chain.append(checkpoint.as_bytes(), &mut out);
            for i in 0..*records {
                chain.append(format!(r#"{{"i":{i}}}"#).as_bytes(), &mut out);
            }
        }
        out
    }

    fn key() -> SigningKey {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(dir.path().join("k"), pair.serialize_pem()).unwrap();
        SigningKey::load(&dir.path().join("k")).unwrap()
    }

    #[test]
    fn unsigned_lines_before_a_new_chain_are_reported_and_the_tail_counted() {
        let key = key();
        let mut walk = Walk {
            allow_new_chain: true,
            key: Some(key.public_key()),
            ..Walk::default()
        };
        walk.file("log", &log(&key, &[(true, 2), (true, 3)]), &[])
            .unwrap();
        assert!(
            walk.warnings
                .iter()
                .any(|w| w.starts_with("log:4: 2 lines before it, after the last signed")),
            "{:?}",
            walk.warnings
        );
        assert_eq!(walk.signed, Some(("log:4".to_string(), 1)));
        assert_eq!(walk.unsigned, 3);
    }

    #[test]
    fn a_checkpoint_without_a_signature_is_a_break_with_a_public_key_only() {
        let key = key();
        let text = log(&key, &[(true, 1), (false, 1)]);
        let mut walk = Walk {
            allow_new_chain: true,
            key: Some(key.public_key()),
            ..Walk::default()
        };
        let broken = walk.file("log", &text, &[]).unwrap_err();
        assert!(
            broken.starts_with("log:3: seq 1: the checkpoint is not signed"),
            "{broken}"
        );
        let mut walk = Walk {
            allow_new_chain: true,
            ..Walk::default()
        };
        assert!(walk.file("log", &text, &[]).is_ok());
    }
}
