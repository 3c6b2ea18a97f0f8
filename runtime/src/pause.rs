//! `pause` / `resume`: freeze and thaw the container's cgroup (v1 freezer.state,
//! v2 cgroup.freeze). `state` derives "paused" from the frozen cgroup, so nothing
//! else is recorded. Status rules and messages follow runc's libcontainer:
//! only a created or running container can be paused ("container not running"),
//! only a paused one resumed ("container not paused").

use crate::state::{self, ContainerState, Status};
use anyhow::{bail, Context, Result};
use berth_cgroups::Cgroup;
use std::path::Path;

pub fn pause(root: &Path, id: &str) -> Result<()> {
    let st = state::load(root, id)?;
    let _lock = state::lock(&state::container_dir(root, id))?;
    match state::status(root, &st) {
        Status::Running | Status::Created => {}
        _ => bail!("container not running"),
    }
    cgroup(&st)?
        .freeze()
        .with_context(|| format!("pause container {id}"))
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let st = state::load(root, id)?;
    let _lock = state::lock(&state::container_dir(root, id))?;
    if state::status(root, &st) != Status::Paused {
        bail!("container not paused");
    }
    cgroup(&st)?
        .thaw()
        .with_context(|| format!("resume container {id}"))
}

fn cgroup(st: &ContainerState) -> Result<&Cgroup> {
    st.cgroup.as_ref().with_context(|| {
        format!(
            "container {} has no cgroup: it cannot be paused or resumed",
            st.id
        )
    })
}
