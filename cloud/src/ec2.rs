//! The EC2 adapter: [`Ec2`] implements [`Provider`] with aws-sdk-ec2 (RunInstances,
//! TerminateInstances, DescribeInstances, CreateTags) against AWS or any
//! EC2-compatible endpoint (`endpoint_url`; the tests use moto's server). Its
//! configuration ([`Ec2Config`]) is the `[cloud.ec2]` table of the controller's config
//! file. Credentials are static (a key id and a file holding the secret), or the
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` environment variables: no instance
//! profile or SSO chain (that would be the `aws-config` crate's work, not pulled in).

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{
    Filter, InstanceAttributeName, InstanceType, ResourceType, Tag, TagSpecification,
};
use base64::Engine;
use serde::Deserialize;

use crate::{billed_hours, CloudError, Instance, InstanceCost, InstanceState, LaunchRequest};

/// The most user-data EC2 takes (before base64).
pub const MAX_USER_DATA: usize = 16 * 1024;

/// `[cloud.ec2]`: where and what to launch.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Config {
    /// The region (`eu-west-1`).
    pub region: String,
    /// An EC2-compatible endpoint instead of AWS's for the region
    /// (`http://127.0.0.1:5000` for moto).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Access key id; with `secret_access_key_file`. Without both, the
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` environment variables.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// File holding the secret access key.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// The AMI of the host image (`make host-image`'s disk registered as an AMI).
    pub ami: String,
    /// The machine type (`m5.metal`, or any with nested virtualization).
    pub instance_type: String,
    #[serde(default)]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// An EC2 key pair for SSH (the host image runs no SSH; for other AMIs).
    #[serde(default)]
    pub key_name: Option<String>,
    /// Tags on every machine launched (beside the controller's own).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// PEM file of a CA the endpoint's certificate is signed by (a private endpoint);
    /// the system's roots otherwise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The machine type's price per hour, USD, for cost estimates; none: costs are
    /// shown in hours only.
    #[serde(default)]
    pub hourly_usd: Option<f64>,
}

fn bad(field: &str, problem: impl Into<String>) -> CloudError {
    CloudError::Config {
        field: format!("ec2.{field}"),
        problem: problem.into(),
    }
}

impl Ec2Config {
    /// Checks every value; an error names the key.
    pub fn validate(&self) -> Result<(), CloudError> {
        let id = |field: &str, v: &str, prefix: &str| {
            let ok = v.starts_with(prefix)
                && v.len() <= 64
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if ok {
                Ok(())
            } else {
                Err(bad(field, format!("{v:?} is not an id like {prefix}0abc")))
            }
        };
        let name_ok =
            |v: &str| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic());
        if !name_ok(&self.region) {
            return Err(bad("region", "must be a region name like eu-west-1"));
        }
        if let Some(u) = &self.endpoint_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || !name_ok(u) {
                return Err(bad("endpoint_url", "must be http(s)://HOST[:PORT]"));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key_file.is_some() {
            return Err(bad(
                "access_key_id",
                "needs secret_access_key_file (and the other way round)",
            ));
        }
        id("ami", &self.ami, "ami-")?;
        if !name_ok(&self.instance_type) {
            return Err(bad("instance_type", "must be a type like m5.large"));
        }
        if let Some(s) = &self.subnet_id {
            id("subnet_id", s, "subnet-")?;
        }
        for g in &self.security_group_ids {
            id("security_group_ids", g, "sg-")?;
        }
        for (k, v) in &self.tags {
            if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
                return Err(bad(
                    "tags",
                    format!("{k:?}: keys 1-128 characters (not aws:), values up to 256"),
                ));
            }
        }
        if let Some(p) = self.hourly_usd {
            if !(p.is_finite() && p >= 0.0) {
                return Err(bad("hourly_usd", "must be a price of 0 or more"));
            }
        }
        Ok(())
    }

    fn credentials(&self) -> Result<Credentials, CloudError> {
        let (id, secret) = match (&self.access_key_id, &self.secret_access_key_file) {
            (Some(id), Some(f)) => {
                let s = std::fs::read_to_string(f)
                    .map_err(|e| bad("secret_access_key_file", format!("{}: {e}", f.display())))?;
                (id.clone(), s.trim().to_string())
            }
            _ => {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(i), Some(s)) => (i, s),
                    _ => {
                        return Err(bad(
                            "access_key_id",
                            "no credentials: set access_key_id and secret_access_key_file, \
                             or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        ))
                    }
                }
            }
        };
        if secret.is_empty() {
            return Err(bad("secret_access_key_file", "is empty"));
        }
        Ok(Credentials::new(id, secret, None, None, "nova-config"))
    }
}

/// EC2 through aws-sdk-ec2.
#[derive(Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    config: Ec2Config,
}

impl std::fmt::Debug for Ec2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2").field("config", &self.config).finish()
    }
}

fn api(call: &'static str, e: impl std::error::Error) -> CloudError {
    CloudError::Api {
        provider: "ec2",
        call,
        message: DisplayErrorContext(e).to_string(),
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let state = match i.state().and_then(|s| s.name()).map(|n| n.as_str()) {
        Some("pending") => InstanceState::Pending,
        Some("running") => InstanceState::Running,
        Some("stopping") => InstanceState::Stopping,
        Some("stopped") => InstanceState::Stopped,
        Some("shutting-down") => InstanceState::ShuttingDown,
        Some("terminated") => InstanceState::Terminated,
        other => InstanceState::Other(other.unwrap_or("unknown").to_string()),
    };
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        state,
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        launched_at_ms: i
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .and_then(|ms| u64::try_from(ms).ok()),
        private_ip: i.private_ip_address().map(String::from),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
    }
}

impl Ec2 {
    /// A client for `config` (checked first). Makes no request.
    pub fn new(config: Ec2Config) -> Result<Ec2, CloudError> {
        use aws_smithy_http_client::tls;
        config.validate()?;
        let creds = config.credentials()?;
        let mut trust = tls::TrustStore::default();
        if let Some(ca) = &config.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| bad("ca_file", format!("{}: {e}", ca.display())))?;
            trust = trust.with_pem_certificate(pem);
        }
        let context = tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| bad("ca_file", e.to_string()))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(context)
            .build_https();
        let mut b = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(creds)
            .http_client(http);
        if let Some(u) = &config.endpoint_url {
            b = b.endpoint_url(u);
        }
        Ok(Ec2 {
            client: aws_sdk_ec2::Client::from_conf(b.build()),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Ec2Config {
        &self.config
    }

    /// The user-data machine `id` was launched with (DescribeInstanceAttribute),
    /// decoded; None when it has none.
    pub async fn user_data(&self, id: &str) -> Result<Option<String>, CloudError> {
        let out = self
            .client
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| api("DescribeInstanceAttribute", e))?;
        let Some(b64) = out.user_data().and_then(|v| v.value()) else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| api("DescribeInstanceAttribute", e))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| api("DescribeInstanceAttribute", e))
    }
}

#[async_trait]
impl crate::Provider for Ec2 {
    fn name(&self) -> &'static str {
        "ec2"
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<Instance, CloudError> {
        if req.user_data.len() > MAX_USER_DATA {
            return Err(bad("user_data", "longer than EC2's 16 KiB"));
        }
        let mut tags: Vec<Tag> = self
            .config
            .tags
            .iter()
            .chain(&req.tags)
            .map(|(k, v)| tag(k, v))
            .collect();
        tags.push(tag("Name", &req.name));
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(tags))
            .build();
        let mut r = self
            .client
            .run_instances()
            .image_id(&self.config.ami)
            .instance_type(InstanceType::from(self.config.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&req.user_data))
            .tag_specifications(spec)
            .set_subnet_id(self.config.subnet_id.clone())
            .set_key_name(self.config.key_name.clone());
        for g in &self.config.security_group_ids {
            r = r.security_group_ids(g);
        }
        let out = r.send().await.map_err(|e| api("RunInstances", e))?;
        match out.instances() {
            [i] => Ok(instance(i)),
            other => Err(CloudError::Api {
                provider: "ec2",
                call: "RunInstances",
                message: format!("answered {} instances for a request of one", other.len()),
            }),
        }
    }

    async fn terminate(&self, id: &str) -> Result<(), CloudError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Gone already (EC2 forgets terminated machines after about an hour).
            Err(e)
                if e.as_service_error()
                    .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                    == Some("InvalidInstanceID.NotFound") =>
            {
                Ok(())
            }
            Err(e) => Err(api("TerminateInstances", e)),
        }
    }

    async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
        let filters: Vec<Filter> = tags
            .iter()
            .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
            .collect();
        let mut out = vec![];
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| api("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(instance));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn tag(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), CloudError> {
        self.client
            .create_tags()
            .resources(id)
            .set_tags(Some(tags.iter().map(|(k, v)| tag(k, v)).collect()))
            .send()
            .await
            .map_err(|e| api("CreateTags", e))?;
        Ok(())
    }

    fn cost(&self, instance_id: &str, launched_at_ms: u64, until_ms: u64) -> InstanceCost {
        let hours = billed_hours(launched_at_ms, until_ms);
        InstanceCost {
            instance_id: instance_id.to_string(),
            hours,
            usd: self.config.hourly_usd.map(|p| p * hours),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Ec2Config {
        Ec2Config {
            region: "us-east-1".into(),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            access_key_id: None,
            secret_access_key_file: None,
            ami: "ami-12345678".into(),
            instance_type: "t3.micro".into(),
            ..Default::default()
        }
    }

    /// One change that spoils a config.
    type Spoil = Box<dyn Fn(&mut Ec2Config)>;

    #[test]
    fn a_bad_value_is_refused_naming_its_key() {
        let cases: Vec<(&str, Spoil)> = vec![
            ("ec2.ami", Box::new(|c| c.ami = "ubuntu".into())),
            ("ec2.region", Box::new(|c| c.region = String::new())),
            (
                "ec2.endpoint_url",
                Box::new(|c| c.endpoint_url = Some("ftp://x".into())),
            ),
            (
                "ec2.subnet_id",
                Box::new(|c| c.subnet_id = Some("net-1".into())),
            ),
            (
                "ec2.security_group_ids",
                Box::new(|c| c.security_group_ids = vec!["x".into()]),
            ),
            ("ec2.hourly_usd", Box::new(|c| c.hourly_usd = Some(-1.0))),
            (
                "ec2.tags",
                Box::new(|c| {
                    c.tags.insert("aws:x".into(), "v".into());
                }),
            ),
            (
                "ec2.access_key_id",
                Box::new(|c| c.access_key_id = Some("AKIA".into())),
            ),
        ];
        for (field, change) in cases {
            let mut c = config();
            change(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
        }
        config().validate().unwrap();
    }

    #[test]
    fn the_secret_comes_from_its_file_and_an_empty_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("nova-cloud-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut c = config();
        c.access_key_id = Some("AKIDEXAMPLE".into());
        c.secret_access_key_file = Some(f.clone());
        let creds = c.credentials().unwrap();
        assert_eq!(creds.secret_access_key(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        let e = c.credentials().unwrap_err().to_string();
        assert!(e.contains("secret_access_key_file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cost_is_hours_times_the_configured_price() {
        let mut c = config();
        c.hourly_usd = Some(0.5);
        c.access_key_id = Some("AKIDEXAMPLE".into());
        let dir = std::env::temp_dir().join(format!("nova-cloud-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "x").unwrap();
        c.secret_access_key_file = Some(dir.join("s"));
        let ec2 = Ec2::new(c).unwrap();
        let cost = crate::Provider::cost(&ec2, "i-1", 0, 7_200_000);
        assert_eq!(cost.hours, 2.0);
        assert_eq!(cost.usd, Some(1.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
