//! The SSRF guard's rule: which upstream addresses a provider may reach.
//! Pure; applied to IP-literal endpoints at compile time and to every
//! resolved address when the gateway connects (so a name that later
//! resolves somewhere else, DNS rebinding, is still refused).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// AWS's IPv6 instance metadata address (`fd00:ec2::254`).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
/// Alibaba Cloud's instance metadata address, outside 169.254.0.0/16.
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// Addresses refused unless a provider allows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restricted {
    /// This host: 127.0.0.0/8, `::1`, and the unspecified addresses, which
    /// connect to this host on Linux.
    Loopback,
    /// 169.254.0.0/16 and fe80::/10, which hold the cloud metadata services
    /// (169.254.169.254); the metadata addresses outside them
    /// (`fd00:ec2::254`, Alibaba's 100.100.100.200) are counted here too.
    LinkLocal,
}

impl Restricted {
    /// The address's restricted class, or `None` for any other address
    /// (public, and private ranges such as 10.0.0.0/8 where in-cluster
    /// services and self-hosted models live).
    pub fn of(ip: IpAddr) -> Option<Restricted> {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of_v4(v4),
                None if v6.is_loopback() || v6.is_unspecified() => Some(Restricted::Loopback),
                None if v6.is_unicast_link_local() || v6 == AWS_METADATA_V6 => {
                    Some(Restricted::LinkLocal)
                }
                None => None,
            },
        }
    }

    fn of_v4(v4: Ipv4Addr) -> Option<Restricted> {
        if v4.is_loopback() || v4.is_unspecified() {
            Some(Restricted::Loopback)
        } else if v4.is_link_local() || v4 == ALIBABA_METADATA {
            Some(Restricted::LinkLocal)
        } else {
            None
        }
    }

    /// For messages: what it is and the field that allows it.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Restricted::Loopback => ("a loopback address", "network.allowLoopback"),
            Restricted::LinkLocal => (
                "a link-local or cloud metadata address",
                "network.allowLinkLocal",
            ),
        }
    }
}

/// What a provider may connect to beyond ordinary addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EgressPolicy {
    pub allow_loopback: bool,
    pub allow_link_local: bool,
}

impl EgressPolicy {
    /// Everything allowed (the built-in mock, which runs beside the gateway).
    pub const OPEN: EgressPolicy = EgressPolicy {
        allow_loopback: true,
        allow_link_local: true,
    };

    pub fn is_default(&self) -> bool {
        *self == EgressPolicy::default()
    }

    /// `Err` with the restricted class when `ip` may not be reached.
    pub fn check(&self, ip: IpAddr) -> Result<(), Restricted> {
        match Restricted::of(ip) {
            Some(Restricted::Loopback) if !self.allow_loopback => Err(Restricted::Loopback),
            Some(Restricted::LinkLocal) if !self.allow_link_local => Err(Restricted::LinkLocal),
            _ => Ok(()),
        }
    }

    /// The check for a URL host as written: an IP literal, or `localhost`
    /// (and `*.localhost`, which resolvers answer with loopback). Other
    /// names are checked when they are resolved.
    pub fn check_host(&self, host: &str) -> Result<(), Restricted> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check(ip);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if (name == "localhost" || name.ends_with(".localhost")) && !self.allow_loopback {
            return Err(Restricted::Loopback);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<Restricted> {
        Restricted::of(ip.parse().unwrap())
    }

    #[test]
    fn classes() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(class(ip), Some(Restricted::Loopback), "{ip}");
        }
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "100.100.100.200",
        ] {
            assert_eq!(class(ip), Some(Restricted::LinkLocal), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "fd00::1",
            // Carrier-grade NAT space around Alibaba's metadata address.
            "100.100.100.201",
            "100.64.0.1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn policy_refuses_unless_allowed() {
        let strict = EgressPolicy::default();
        assert_eq!(strict.check_host("127.0.0.1"), Err(Restricted::Loopback));
        assert_eq!(strict.check_host("[::1]"), Err(Restricted::Loopback));
        assert_eq!(strict.check_host("localhost"), Err(Restricted::Loopback));
        assert_eq!(
            strict.check_host("api.LOCALHOST."),
            Err(Restricted::Loopback)
        );
        assert_eq!(
            strict.check_host("169.254.169.254"),
            Err(Restricted::LinkLocal)
        );
        assert_eq!(
            strict.check_host("api.openai.com"),
            Ok(()),
            "names are checked on connect"
        );
        assert_eq!(strict.check_host("10.1.2.3"), Ok(()));
        let loopback = EgressPolicy {
            allow_loopback: true,
            ..EgressPolicy::default()
        };
        assert_eq!(loopback.check_host("127.0.0.1"), Ok(()));
        assert_eq!(
            loopback.check_host("169.254.169.254"),
            Err(Restricted::LinkLocal)
        );
        assert_eq!(EgressPolicy::OPEN.check_host("169.254.169.254"), Ok(()));
    }
}
