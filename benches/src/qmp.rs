//! A minimal QMP client: enough to drive QEMU's migration for the benchmarks.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

/// A command with its arguments, as QMP takes it.
#[derive(Serialize)]
struct Execute<'a, T: Serialize> {
    execute: &'a str,
    arguments: &'a T,
}

/// A command without arguments.
#[derive(Serialize)]
pub struct NoArgs {}

/// `migrate-set-capabilities`: one capability switched.
#[derive(Serialize)]
pub struct Capabilities {
    pub capabilities: [Capability; 1],
}

#[derive(Serialize)]
pub struct Capability {
    pub capability: &'static str,
    pub state: bool,
}

impl Capabilities {
    pub fn one(capability: &'static str, state: bool) -> Capabilities {
        Capabilities {
            capabilities: [Capability { capability, state }],
        }
    }
}

/// `migrate-set-parameters`: the downtime limit and the bandwidth cap.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateParameters {
    pub downtime_limit: u64,
    pub max_bandwidth: u64,
}

/// `migrate`: where to.
#[derive(Serialize)]
pub struct Migrate {
    pub uri: String,
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (waiting for QEMU to create the socket) and negotiates capabilities.
    pub fn connect(path: &Path) -> anyhow::Result<Qmp> {
        let mut stream = None;
        for _ in 0..500 {
            if let Ok(s) = UnixStream::connect(path) {
                stream = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stream = stream.with_context(|| format!("QMP socket {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        q.read()?; // greeting
        q.cmd("qmp_capabilities", &NoArgs {})?;
        Ok(q)
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP closed");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Runs a command and returns its `return` value (events are skipped).
    pub fn cmd<T: Serialize>(&mut self, name: &str, args: &T) -> anyhow::Result<Value> {
        let msg = serde_json::to_string(&Execute {
            execute: name,
            arguments: args,
        })?;
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {name}: {e}");
            }
        }
    }
}
