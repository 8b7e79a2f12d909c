//! The ministry's unit registry: who exists, who is live, who may speak for whom.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use truc_edxml::{OrgCode, OrgLevel};
use truc_store::{Store, Timestamp};

use crate::error::RelayError;

/// Whether a unit takes deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Registered, not connected yet: its deliveries are held.
    Pending,
    /// Connected: deliveries go to its inbox.
    Active,
    /// Temporarily cut off (by an operator): its deliveries are held, its adapter refused.
    Suspended,
}

impl UnitState {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Pending => "pending",
            UnitState::Active => "active",
            UnitState::Suspended => "suspended",
        }
    }
}

/// A unit of the ministry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// Its code.
    pub code: OrgCode,
    /// Its name.
    pub name: String,
    /// Its parent, when the code does not say (free-form codes), or to override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<OrgCode>,
    /// Live or not.
    #[serde(default = "default_state")]
    pub state: UnitState,
    /// SHA-256 fingerprints (hex) of the client certificates of its adapter (level-2 units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// DNS subject alternative names that identify its adapter's certificates (any
    /// certificate the adapters' CA issues with one of these names), for units that renew
    /// certificates without re-registering fingerprints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// For the ministry's own code (level 1): the level-2 unit that receives its mail
    /// (usually the Văn phòng Bộ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<OrgCode>,
}

fn default_state() -> UnitState {
    UnitState::Active
}

/// The registry file: the ministry's code and its units (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryFile {
    /// The ministry's own code (e.g. `000.00.00.G04`).
    pub ministry: OrgCode,
    /// Its units.
    #[serde(rename = "unit", default)]
    pub units: Vec<Unit>,
}

impl RegistryFile {
    /// Parses a registry file.
    pub fn from_toml(text: &str) -> Result<Self, RelayError> {
        toml::from_str(text).map_err(|e| RelayError::Config(format!("registry: {e}")))
    }

    /// Parses a registry in CSV, as exported from a spreadsheet: a header line with
    /// `code,name` and optionally `parent`, `state`, `certificates` (fingerprints separated
    /// by spaces or `;`) and `served_by`. The ministry's code comes from the configuration.
    pub fn from_csv(ministry: &OrgCode, text: &str) -> Result<Self, RelayError> {
        #[derive(Deserialize)]
        struct Row {
            code: String,
            name: String,
            #[serde(default)]
            parent: String,
            #[serde(default)]
            state: String,
            #[serde(default)]
            certificates: String,
            #[serde(default)]
            served_by: String,
        }
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut units = Vec::new();
        for (i, row) in reader.deserialize::<Row>().enumerate() {
            let line = i + 2;
            let row =
                row.map_err(|e| RelayError::Config(format!("registry CSV line {line}: {e}")))?;
            let code = |s: &str, what: &str| {
                OrgCode::parse(s).map_err(|e| {
                    RelayError::Config(format!("registry CSV line {line}: {what} {s:?}: {e}"))
                })
            };
            let optional = |s: &str, what: &str| {
                if s.is_empty() {
                    Ok(None)
                } else {
                    code(s, what).map(Some)
                }
            };
            let state = match row.state.to_ascii_lowercase().as_str() {
                "" | "active" => UnitState::Active,
                "pending" => UnitState::Pending,
                "suspended" => UnitState::Suspended,
                other => {
                    return Err(RelayError::Config(format!(
                    "registry CSV line {line}: state {other:?} is not pending, active or suspended"
                )))
                }
            };
            units.push(Unit {
                code: code(&row.code, "code")?,
                name: row.name,
                parent: optional(&row.parent, "parent")?,
                state,
                certificates: row
                    .certificates
                    .split([' ', ';'])
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                names: Vec::new(),
                served_by: optional(&row.served_by, "served_by")?,
            });
        }
        Ok(RegistryFile {
            ministry: ministry.clone(),
            units,
        })
    }

    /// Writes it as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Where a recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// To this level-2 unit's inbox (the recipient is that unit, or the ministry it serves).
    Local {
        /// The level-2 unit whose adapter receives it.
        inbox: OrgCode,
    },
    /// A level-3 unit, through its level-2 parent's inbox.
    ViaParent {
        /// The parent.
        inbox: OrgCode,
    },
    /// Registered but not active (or its parent is not): held in this inbox.
    Held {
        /// The inbox that will carry it.
        inbox: OrgCode,
    },
    /// Outside the ministry: the national axis.
    NationalAxis,
}

const NAMESPACE: &str = "units";
const DIRECTORY: &str = "directory";

/// A body of the national directory (another ministry's or province's unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteBody {
    /// Its code.
    pub code: OrgCode,
    /// Its name.
    pub name: String,
    /// Its parent's code, when the directory gives one.
    #[serde(default)]
    pub parent: Option<OrgCode>,
}

/// The registry, shared by the relay's tasks.
#[derive(Debug)]
pub struct Registry {
    ministry: OrgCode,
    units: RwLock<BTreeMap<OrgCode, Unit>>,
    /// The national directory, synchronised from the axis (empty until the first sync).
    remote: RwLock<BTreeMap<OrgCode, RemoteBody>>,
    /// Moves on at every change of the units, so that what was decided from them (a
    /// connected adapter's identity) can tell it must be decided again.
    generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// An empty registry of a ministry.
    pub fn new(ministry: OrgCode) -> Self {
        Registry {
            ministry,
            units: RwLock::new(BTreeMap::new()),
            remote: RwLock::new(BTreeMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A number that changes whenever a unit is added, changed or removed (cheap to read:
    /// compare it to decide whether a check against the units must be made again).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The ministry's code.
    pub fn ministry(&self) -> &OrgCode {
        &self.ministry
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<OrgCode, Unit>> {
        self.units.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<OrgCode, Unit>> {
        let guard = self.units.write().unwrap_or_else(|p| p.into_inner());
        // Moved on while the lock is held: whoever reads the new number and then the units
        // waits for this change to be whole.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        guard
    }

    /// Replaces the national directory (from the axis's `getAgenciesList`), durably.
    pub async fn set_directory(
        &self,
        store: &dyn Store,
        bodies: Vec<RemoteBody>,
    ) -> Result<usize, RelayError> {
        let value = serde_json::to_vec(&bodies).map_err(|e| RelayError::Config(e.to_string()))?;
        store.put_setting(DIRECTORY, "bodies", &value).await?;
        let n = bodies.len();
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) =
            bodies.into_iter().map(|b| (b.code.clone(), b)).collect();
        Ok(n)
    }

    /// A body of the national directory.
    pub fn remote(&self, code: &OrgCode) -> Option<RemoteBody> {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(code)
            .cloned()
    }

    /// The national directory.
    pub fn remote_bodies(&self) -> Vec<RemoteBody> {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Loads the units saved in the store.
    pub async fn load(&self, store: &dyn Store) -> Result<usize, RelayError> {
        if let Some((_, value)) = store.settings(DIRECTORY).await?.into_iter().next() {
            let bodies: Vec<RemoteBody> = serde_json::from_slice(&value)
                .map_err(|e| RelayError::Config(format!("stored directory: {e}")))?;
            *self.remote.write().unwrap_or_else(|p| p.into_inner()) =
                bodies.into_iter().map(|b| (b.code.clone(), b)).collect();
        }
        let saved = store.settings(NAMESPACE).await?;
        let mut units = self.write();
        for (_, value) in &saved {
            let unit: Unit = serde_json::from_slice(value)
                .map_err(|e| RelayError::Config(format!("stored unit: {e}")))?;
            units.insert(unit.code.clone(), unit);
        }
        Ok(saved.len())
    }

    /// Adds or replaces a unit, durably, with an audit entry.
    pub async fn upsert(
        &self,
        store: &dyn Store,
        unit: Unit,
        actor: &str,
    ) -> Result<(), RelayError> {
        self.validate(&unit)?;
        if let Some((credential, unit)) = self.credential_taken(&unit) {
            return Err(RelayError::CredentialInUse { credential, unit });
        }
        self.store_unit(store, unit, actor).await
    }

    /// Writes a unit as it is, durably, with an audit entry.
    async fn store_unit(
        &self,
        store: &dyn Store,
        unit: Unit,
        actor: &str,
    ) -> Result<(), RelayError> {
        let value = serde_json::to_vec(&unit).map_err(|e| RelayError::Config(e.to_string()))?;
        store
            .put_setting(NAMESPACE, unit.code.as_str(), &value)
            .await?;
        store
            .audit(
                actor,
                "unit.upsert",
                unit.code.as_str(),
                unit.state.as_str(),
                Timestamp::now(),
            )
            .await?;
        self.write().insert(unit.code.clone(), unit);
        Ok(())
    }

    /// Changes a unit's state (activate, suspend), durably, with an audit entry. Activating
    /// releases the deliveries held for it and for its level-3 children.
    pub async fn set_state(
        &self,
        store: &dyn Store,
        code: &OrgCode,
        state: UnitState,
        actor: &str,
    ) -> Result<usize, RelayError> {
        let mut unit = self
            .unit(code)
            .ok_or_else(|| RelayError::UnknownUnit(code.to_string()))?;
        unit.state = state;
        self.upsert(store, unit, actor).await?;
        let mut released = 0;
        if state == UnitState::Active {
            let now = Timestamp::now();
            let mut codes = vec![code.clone()];
            codes.extend(self.children(code).into_iter().map(|u| u.code));
            for c in codes {
                if self
                    .route(&c)
                    .map(|r| !matches!(r, RouteDecision::Held { .. }))
                    .unwrap_or(false)
                {
                    released += store.release_held(&c, now).await?;
                }
            }
        }
        Ok(released)
    }

    /// Imports a registry file: every unit is added or replaced.
    pub async fn import(
        &self,
        store: &dyn Store,
        file: &RegistryFile,
        actor: &str,
    ) -> Result<usize, RelayError> {
        if file.ministry != self.ministry {
            return Err(RelayError::Config(format!(
                "the registry file is for {}, this relay serves {}",
                file.ministry, self.ministry
            )));
        }
        // The file is the truth: its units may not share a certificate among themselves,
        // and one it gives a unit is taken from any unit outside it that had it (a unit
        // re-coded, a certificate moved), so a consistent file always imports.
        for (i, unit) in file.units.iter().enumerate() {
            self.validate(unit)?;
            for other in &file.units[..i] {
                if other.code != unit.code {
                    if let Some(credential) = shared_credential(unit, other) {
                        return Err(RelayError::CredentialInUse {
                            credential,
                            unit: other.code.to_string(),
                        });
                    }
                }
            }
        }
        let stale: Vec<Unit> = self
            .units()
            .into_iter()
            .filter(|u| !file.units.iter().any(|f| f.code == u.code))
            .filter_map(|mut u| {
                let before = (u.certificates.len(), u.names.len());
                for f in &file.units {
                    u.certificates
                        .retain(|c| !f.certificates.iter().any(|o| o.eq_ignore_ascii_case(c)));
                    u.names
                        .retain(|n| !f.names.iter().any(|o| o.eq_ignore_ascii_case(n)));
                }
                (before != (u.certificates.len(), u.names.len())).then_some(u)
            })
            .collect();
        for unit in stale {
            tracing::warn!(unit = %unit.code, "the registry file gives this unit's certificate to another unit: taken from it");
            self.store_unit(store, unit, actor).await?;
        }
        for unit in &file.units {
            self.store_unit(store, unit.clone(), actor).await?;
        }
        Ok(file.units.len())
    }

    /// A certificate fingerprint or name `unit` would newly have (not in its current
    /// version) that another unit has, and that unit: a certificate of two units would let
    /// one unit's adapter act as the other, whichever the lookup found first. Credentials
    /// a unit already has are not looked at again, so a change of state is never refused
    /// for what was registered before.
    fn credential_taken(&self, unit: &Unit) -> Option<(String, String)> {
        let units = self.read();
        let mut added = unit.clone();
        if let Some(current) = units.get(&unit.code) {
            added.certificates.retain(|c| {
                !current
                    .certificates
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(c))
            });
            added
                .names
                .retain(|n| !current.names.iter().any(|o| o.eq_ignore_ascii_case(n)));
        }
        units
            .values()
            .filter(|other| other.code != unit.code)
            .find_map(|other| shared_credential(&added, other).map(|c| (c, other.code.to_string())))
    }

    fn validate(&self, unit: &Unit) -> Result<(), RelayError> {
        if !unit.code.is_within(&self.ministry) && unit.parent.is_none() {
            return Err(RelayError::Config(format!(
                "{} is not a unit of {} (give its parent explicitly for a free-form code)",
                unit.code, self.ministry
            )));
        }
        Ok(())
    }

    /// A unit by code.
    pub fn unit(&self, code: &OrgCode) -> Option<Unit> {
        self.read().get(code).cloned()
    }

    /// Every unit, in code order.
    pub fn units(&self) -> Vec<Unit> {
        self.read().values().cloned().collect()
    }

    /// The units whose parent is `code`.
    pub fn children(&self, code: &OrgCode) -> Vec<Unit> {
        self.read()
            .values()
            .filter(|u| self.parent_of(u).as_ref() == Some(code))
            .cloned()
            .collect()
    }

    /// The parent of a unit: explicit, else derived from the code.
    pub fn parent_of(&self, unit: &Unit) -> Option<OrgCode> {
        unit.parent.clone().or_else(|| unit.code.parent())
    }

    /// The unit level: from the code, or one below its parent for free-form codes.
    pub fn level_of(&self, unit: &Unit) -> Option<OrgLevel> {
        unit.code.level().or_else(|| {
            let parent = self.unit(unit.parent.as_ref()?)?;
            match self.level_of(&parent)? {
                OrgLevel::One => Some(OrgLevel::Two),
                OrgLevel::Two => Some(OrgLevel::Three),
                _ => Some(OrgLevel::Four),
            }
        })
    }

    /// The level-2 unit whose adapter has this certificate (SHA-256 hex fingerprint).
    pub fn unit_for_certificate(&self, fingerprint: &str) -> Option<Unit> {
        self.read()
            .values()
            .find(|u| {
                u.certificates
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(fingerprint))
            })
            .cloned()
    }

    /// The level-2 unit registered for one of these certificate DNS names.
    pub fn unit_for_name(&self, names: &[String]) -> Option<Unit> {
        self.read()
            .values()
            .find(|u| {
                u.names
                    .iter()
                    .any(|n| names.iter().any(|m| m.eq_ignore_ascii_case(n)))
            })
            .cloned()
    }

    /// Whether `code` belongs to this ministry (by its code, or because it is registered).
    pub fn is_ministry_code(&self, code: &OrgCode) -> bool {
        code.is_within(&self.ministry) || self.read().contains_key(code)
    }

    /// Whether the national directory lists `code` or one of its ancestors.
    fn is_listed_remote(&self, code: &OrgCode) -> bool {
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
        let mut cur = Some(code.clone());
        while let Some(c) = cur {
            if remote.contains_key(&c) {
                return true;
            }
            cur = c.parent();
        }
        false
    }

    /// The level-2 unit whose inbox serves `code`, following parents (and the ministry's
    /// `served_by`).
    pub fn serving_unit(&self, code: &OrgCode) -> Option<Unit> {
        let mut current = self.unit(code)?;
        for _ in 0..4 {
            match self.level_of(&current) {
                Some(OrgLevel::Two) => return Some(current),
                Some(OrgLevel::One) => return self.unit(current.served_by.as_ref()?),
                _ => current = self.unit(&self.parent_of(&current)?)?,
            }
        }
        None
    }

    /// Decides where a recipient's copy goes.
    pub fn route(&self, recipient: &OrgCode) -> Result<RouteDecision, RelayError> {
        if !self.is_ministry_code(recipient) {
            // Once the national directory is known, a code that is neither ours nor in it
            // is unknown, not remote.
            let directory_known = !self
                .remote
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            let listed = directory_known && self.is_listed_remote(recipient);
            if directory_known && !listed {
                return Err(RelayError::UnknownRemote(recipient.to_string()));
            }
            return Ok(RouteDecision::NationalAxis);
        }
        let unit = self
            .unit(recipient)
            .ok_or_else(|| RelayError::UnknownUnit(recipient.to_string()))?;
        let inbox_unit = self.serving_unit(recipient).ok_or_else(|| {
            RelayError::UnknownUnit(format!("{recipient} (no level-2 unit serves it)"))
        })?;
        let inbox = inbox_unit.code.clone();
        if unit.state != UnitState::Active || inbox_unit.state != UnitState::Active {
            return Ok(RouteDecision::Held { inbox });
        }
        Ok(
            if inbox == *recipient || self.level_of(&unit) == Some(OrgLevel::One) {
                RouteDecision::Local { inbox }
            } else {
                RouteDecision::ViaParent { inbox }
            },
        )
    }

    /// Whether the adapter of level-2 unit `adapter` may send as `from`: its own unit, or
    /// one of the units it serves (level-3 children, the ministry if it serves it).
    pub fn may_send_as(&self, adapter: &OrgCode, from: &OrgCode) -> bool {
        self.serving_unit(from)
            .map(|u| u.code == *adapter)
            .unwrap_or(false)
    }
}

/// A certificate fingerprint or name both units have, described.
fn shared_credential(a: &Unit, b: &Unit) -> Option<String> {
    let same = |x: &String, y: &String| x.eq_ignore_ascii_case(y);
    a.certificates
        .iter()
        .find(|c| b.certificates.iter().any(|o| same(o, c)))
        .map(|c| format!("certificate {c}"))
        .or_else(|| {
            a.names
                .iter()
                .find(|n| b.names.iter().any(|o| same(o, n)))
                .map(|n| format!("certificate name {n}"))
        })
}

/// Names of the Ministry of Transport's level-2 units, with the two-digit codes the sample
/// packages use for the first three.
const LEVEL2: &[(&str, &str)] = &[
    ("05", "Tổng cục Đường bộ Việt Nam"),
    ("07", "Cục Hàng hải Việt Nam"),
    ("09", "Cục Đăng kiểm Việt Nam"),
    ("01", "Văn phòng Bộ"),
    ("02", "Thanh tra Bộ"),
    ("03", "Vụ Kế hoạch - Đầu tư"),
    ("04", "Vụ Tài chính"),
    ("06", "Cục Hàng không Việt Nam"),
    ("08", "Cục Đường sắt Việt Nam"),
    ("10", "Cục Đường thủy nội địa Việt Nam"),
    (
        "11",
        "Cục Quản lý xây dựng và Chất lượng công trình giao thông",
    ),
    ("12", "Cục Y tế Giao thông vận tải"),
    ("13", "Vụ Kết cấu hạ tầng giao thông"),
    ("14", "Vụ Vận tải"),
    ("15", "Vụ An toàn giao thông"),
    ("16", "Vụ Khoa học - Công nghệ và Môi trường"),
    ("17", "Vụ Hợp tác quốc tế"),
    ("18", "Vụ Pháp chế"),
    ("19", "Vụ Tổ chức cán bộ"),
    ("20", "Vụ Quản lý doanh nghiệp"),
    ("21", "Trung tâm Công nghệ thông tin"),
    ("22", "Báo Giao thông"),
    ("23", "Tạp chí Giao thông vận tải"),
    ("24", "Viện Chiến lược và Phát triển giao thông vận tải"),
    ("25", "Viện Khoa học và Công nghệ giao thông vận tải"),
    ("26", "Trường Đại học Công nghệ giao thông vận tải"),
    ("27", "Trường Đại học Hàng hải Việt Nam"),
    ("28", "Học viện Hàng không Việt Nam"),
    ("29", "Trường Cao đẳng Giao thông vận tải Trung ương I"),
    ("30", "Trường Cao đẳng Giao thông vận tải Trung ương II"),
    ("31", "Trường Cao đẳng Giao thông vận tải Trung ương III"),
    ("32", "Trường Cao đẳng Giao thông vận tải Trung ương IV"),
    ("33", "Trường Cao đẳng Giao thông vận tải Trung ương V"),
    ("34", "Trường Cao đẳng Giao thông vận tải Trung ương VI"),
    ("35", "Trường Cao đẳng Giao thông vận tải đường thủy I"),
    ("36", "Trường Cao đẳng Giao thông vận tải đường thủy II"),
    ("37", "Trường Cao đẳng Hàng hải I"),
    ("38", "Trường Cao đẳng Hàng hải II"),
    ("39", "Trường Cao đẳng Đường sắt"),
    ("40", "Trường Cao đẳng nghề Giao thông vận tải Trung ương"),
    ("41", "Tổng công ty Đường sắt Việt Nam"),
    ("42", "Tổng công ty Hàng hải Việt Nam"),
    ("43", "Tổng công ty Cảng hàng không Việt Nam"),
    ("44", "Tổng công ty Quản lý bay Việt Nam"),
    ("45", "Tổng công ty Bảo đảm an toàn hàng hải miền Bắc"),
    ("46", "Tổng công ty Bảo đảm an toàn hàng hải miền Nam"),
    ("47", "Tổng công ty Công nghiệp tàu thủy"),
    ("48", "Ban Quản lý dự án 2"),
    ("49", "Ban Quản lý dự án 6"),
    ("50", "Ban Quản lý dự án 7"),
    ("51", "Ban Quản lý dự án 85"),
    ("52", "Ban Quản lý dự án Mỹ Thuận"),
    ("53", "Ban Quản lý dự án Thăng Long"),
    ("54", "Ban Quản lý dự án Hàng hải"),
    ("55", "Ban Quản lý dự án Đường thủy"),
    ("56", "Ban Quản lý dự án Đường sắt"),
    ("57", "Ban Quản lý dự án Đường Hồ Chí Minh"),
];

/// Level-3 units: (parent's two digits, name pattern, how many). `{n}` is replaced by a
/// number, `{r}` by a region.
const LEVEL3: &[(&str, &str, usize)] = &[
    ("05", "Cục Quản lý đường bộ {roman}", 4),
    ("05", "Trung tâm Kỹ thuật đường bộ {n}", 7),
    ("05", "Văn phòng Tổng cục Đường bộ", 1),
    ("07", "Cảng vụ Hàng hải {port}", 24),
    ("07", "Chi cục Hàng hải Việt Nam tại {city}", 2),
    ("09", "Trung tâm Đăng kiểm xe cơ giới {n}", 30),
    ("09", "Chi cục Đăng kiểm số {n}", 12),
    ("06", "Cảng vụ Hàng không {region}", 3),
    ("10", "Chi cục Đường thủy nội địa khu vực {roman}", 4),
    ("10", "Cảng vụ Đường thủy nội địa khu vực {roman}", 4),
    ("08", "Chi cục Đường sắt khu vực {roman}", 3),
    ("11", "Chi cục Quản lý xây dựng khu vực {roman}", 3),
    ("12", "Trung tâm Y tế Giao thông vận tải khu vực {roman}", 4),
    ("41", "Công ty cổ phần Đường sắt khu vực {n}", 20),
    ("41", "Ga {city}", 15),
    ("42", "Cảng {port}", 15),
    ("43", "Cảng hàng không {airport}", 22),
    ("44", "Công ty Quản lý bay miền {region}", 3),
    ("45", "Công ty Bảo đảm an toàn hàng hải {n}", 10),
    ("46", "Công ty Bảo đảm an toàn hàng hải khu vực {roman}", 6),
    ("21", "Phòng Hạ tầng kỹ thuật {n}", 3),
    ("26", "Khoa Công trình {n}", 3),
    ("27", "Viện Đào tạo {n}", 3),
    ("01", "Phòng Văn thư - Lưu trữ {n}", 2),
    ("02", "Phòng Thanh tra khu vực {roman}", 5),
    ("24", "Trung tâm Nghiên cứu {n}", 5),
    ("25", "Trung tâm Khoa học công nghệ {n}", 5),
    ("14", "Phòng Quản lý vận tải khu vực {roman}", 4),
    ("15", "Ban An toàn giao thông khu vực {roman}", 4),
];

const ROMAN: &[&str] = &["I", "II", "III", "IV", "V", "VI", "VII", "VIII"];
const PORTS: &[&str] = &[
    "Hải Phòng",
    "Quảng Ninh",
    "Thanh Hóa",
    "Nghệ An",
    "Hà Tĩnh",
    "Quảng Bình",
    "Quảng Trị",
    "Thừa Thiên Huế",
    "Đà Nẵng",
    "Quảng Nam",
    "Quảng Ngãi",
    "Quy Nhơn",
    "Nha Trang",
    "Bình Thuận",
    "Vũng Tàu",
    "Thành phố Hồ Chí Minh",
    "Đồng Tháp",
    "Mỹ Tho",
    "Cần Thơ",
    "An Giang",
    "Kiên Giang",
    "Cà Mau",
    "Thái Bình",
    "Nam Định",
];
const CITIES: &[&str] = &[
    "Hà Nội",
    "Thành phố Hồ Chí Minh",
    "Đà Nẵng",
    "Vinh",
    "Huế",
    "Nha Trang",
    "Lào Cai",
    "Thanh Hóa",
    "Đồng Hới",
    "Quảng Ngãi",
    "Diêu Trì",
    "Tuy Hòa",
    "Tháp Chàm",
    "Biên Hòa",
    "Hải Phòng",
];
const AIRPORTS: &[&str] = &[
    "Nội Bài",
    "Tân Sơn Nhất",
    "Đà Nẵng",
    "Cam Ranh",
    "Phú Quốc",
    "Cát Bi",
    "Vinh",
    "Phú Bài",
    "Liên Khương",
    "Cần Thơ",
    "Buôn Ma Thuột",
    "Phù Cát",
    "Pleiku",
    "Đồng Hới",
    "Thọ Xuân",
    "Chu Lai",
    "Tuy Hòa",
    "Điện Biên",
    "Côn Đảo",
    "Rạch Giá",
    "Cà Mau",
    "Vân Đồn",
];
const REGIONS: &[&str] = &["miền Bắc", "miền Trung", "miền Nam"];

/// A realistic registry of the Ministry of Transport: 57 level-2 units and 226 level-3
/// units, all active, without certificates. For tests, the demo and benchmarks.
pub fn sample_transport_ministry(ministry: &OrgCode) -> RegistryFile {
    let m = ministry
        .as_str()
        .rsplit('.')
        .next()
        .unwrap_or("G04")
        .to_owned();
    let code = |s: String| OrgCode::parse(&s).ok();
    let mut units = Vec::new();
    if let Some(c) = code(format!("000.00.00.{m}")) {
        units.push(Unit {
            code: c,
            name: "Bộ Giao thông vận tải".into(),
            parent: None,
            state: UnitState::Active,
            certificates: Vec::new(),
            names: Vec::new(),
            served_by: code(format!("000.00.01.{m}")),
        });
    }
    for (yy, name) in LEVEL2 {
        if let Some(c) = code(format!("000.00.{yy}.{m}")) {
            units.push(Unit {
                code: c,
                name: (*name).into(),
                parent: None,
                state: UnitState::Active,
                certificates: Vec::new(),
                names: Vec::new(),
                served_by: None,
            });
        }
    }
    let mut next: BTreeMap<&str, u32> = BTreeMap::new();
    for (yy, pattern, count) in LEVEL3 {
        for i in 0..*count {
            let zz = next.entry(yy).or_insert(0);
            *zz += 1;
            let name = pattern
                .replace("{n}", &(i + 1).to_string())
                .replace("{roman}", ROMAN[i % ROMAN.len()])
                .replace("{port}", PORTS[i % PORTS.len()])
                .replace("{city}", CITIES[i % CITIES.len()])
                .replace("{airport}", AIRPORTS[i % AIRPORTS.len()])
                .replace("{region}", REGIONS[i % REGIONS.len()]);
            if let Some(c) = code(format!("000.{:02}.{yy}.{m}", zz)) {
                units.push(Unit {
                    code: c,
                    name,
                    parent: None,
                    state: UnitState::Active,
                    certificates: Vec::new(),
                    names: Vec::new(),
                    served_by: None,
                });
            }
        }
    }
    RegistryFile {
        ministry: ministry.clone(),
        units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(code: &str, certificate: &str) -> Unit {
        Unit {
            code: OrgCode::parse(code).expect("code"),
            name: code.into(),
            parent: None,
            state: UnitState::Active,
            certificates: vec![certificate.into()],
            names: Vec::new(),
            served_by: None,
        }
    }

    #[tokio::test]
    async fn a_certificate_names_one_unit_and_a_consistent_file_always_imports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = truc_store::SledStore::open(dir.path(), truc_store::StoreConfig::default())
            .expect("store");
        let ministry = OrgCode::parse("000.00.00.G04").expect("code");
        let registry = Registry::new(ministry.clone());
        let (x, y) = ("000.00.05.G04", "000.00.07.G04");
        registry
            .upsert(&store, unit(x, "aa11"), "test")
            .await
            .expect("x");
        // Another unit may not take X's certificate...
        let err = registry
            .upsert(&store, unit(y, "AA11"), "test")
            .await
            .expect_err("taken");
        assert_eq!(err.code(), "AUTH_CREDENTIAL_IN_USE");
        // ...nor may two units of one file share one.
        let twice = RegistryFile {
            ministry: ministry.clone(),
            units: vec![unit(y, "bb22"), unit("000.00.09.G04", "bb22")],
        };
        let err = registry
            .import(&store, &twice, "test")
            .await
            .expect_err("shared in the file");
        assert_eq!(err.code(), "AUTH_CREDENTIAL_IN_USE");
        // A file that moves X's certificate to Y (X re-coded) imports: X loses it.
        let moved = RegistryFile {
            ministry,
            units: vec![unit(y, "aa11")],
        };
        registry
            .import(&store, &moved, "test")
            .await
            .expect("a consistent file imports");
        assert_eq!(
            registry
                .unit_for_certificate("aa11")
                .map(|u| u.code.to_string()),
            Some(y.to_owned())
        );
        assert!(registry
            .unit(&OrgCode::parse(x).expect("code"))
            .expect("x")
            .certificates
            .is_empty());
        // A change of state is never refused for what a unit already has.
        let before = registry.generation();
        registry
            .set_state(
                &store,
                &OrgCode::parse(y).expect("code"),
                UnitState::Suspended,
                "test",
            )
            .await
            .expect("suspended");
        assert!(
            registry.generation() > before,
            "a change moves the generation on"
        );
    }
}
