//! `build --print`: the frontend's resolved plan with each step's cache key.
//!
//! The stages of the plan run through the very code a build runs
//! ([`super::stage`]), in planning mode: every key is computed by
//! [`super::step_key`] from the same inputs (context files hashed, base
//! images resolved in the store, stage keys awaited), each layer step is
//! looked up in the store, and nothing is executed, downloaded or written.
//! What a key could not be computed from is said, never guessed.
//! docs/build-plan.md describes the JSON.
use serde::Serialize;
use serde_json::{Map, Value};

/// What `build --print` shows of one step (the FROM line or an instruction).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepPlan {
    /// The step's number in the build's progress (FROM lines count).
    pub step: u32,
    /// `base` (FROM), `layer` (RUN, COPY, ADD, WORKDIR: a cached layer) or
    /// `metadata` (only changes the config; no key of its own, its effect
    /// is in later layer steps' inputs).
    pub kind: &'static str,
    /// The key the build looks the step up with; null for metadata steps
    /// and for keys not knowable before the build runs (`pending` says why).
    pub cache_key: Option<String>,
    /// The named fields hashed into `cache_key` (those known, for a pending one).
    pub key_inputs: Option<Map<String, Value>>,
    /// Layer steps: the store has an entry for the key now. Base steps: the
    /// base's filesystem is at hand (scratch, an image in the store, a stage
    /// whose every layer step is cached). Null when not known or not relevant.
    pub cached: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// An uncached layer step: why the cache misses, comparing its inputs
    /// with what the same step of the same Dockerfile had last time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miss_reason: Option<String>,
}

impl StepPlan {
    pub fn metadata(step: u32) -> Self {
        Self {
            step,
            kind: "metadata",
            cache_key: None,
            key_inputs: None,
            cached: None,
            pending: None,
            miss_reason: None,
        }
    }

    pub fn pending(
        step: u32,
        kind: &'static str,
        why: String,
        inputs: Option<Map<String, Value>>,
    ) -> Self {
        Self {
            step,
            kind,
            cache_key: None,
            key_inputs: inputs,
            cached: None,
            pending: Some(why),
            miss_reason: None,
        }
    }

    pub fn keyed(
        step: u32,
        kind: &'static str,
        key: super::step_key::Key,
        cached: bool,
        miss_reason: Option<String>,
    ) -> Self {
        Self {
            step,
            kind,
            cache_key: Some(key.digest),
            key_inputs: Some(key.inputs),
            cached: Some(cached),
            pending: None,
            miss_reason,
        }
    }
}

/// Adds the planned steps to the plan's JSON: `from_step` on each stage,
/// the step's fields on each instruction (`steps[0]` is the FROM line).
pub(crate) fn annotate(
    plan: &mut Value,
    steps_of: &dyn Fn(usize) -> Option<Vec<StepPlan>>,
) -> anyhow::Result<()> {
    let Some(stages) = plan.get_mut("stages").and_then(Value::as_array_mut) else {
        anyhow::bail!("the plan has no stages");
    };
    for stage in stages {
        let index = stage
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow::anyhow!("a planned stage without index"))?;
        let Some(steps) = steps_of(index as usize) else {
            anyhow::bail!("stage {index} was not planned");
        };
        let mut steps = steps.into_iter();
        if let Some(from) = steps.next() {
            stage["from_step"] = serde_json::to_value(from)?;
        }
        let Some(ins) = stage.get_mut("instructions").and_then(Value::as_array_mut) else {
            continue;
        };
        for (node, step) in ins.iter_mut().zip(steps) {
            if let (Value::Object(node), Value::Object(fields)) =
                (node, serde_json::to_value(step)?)
            {
                node.extend(fields);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotate_puts_from_first_then_each_instruction() {
        let mut plan = json!({"stages": [{"index": 3, "instructions": [
            {"original": "ENV A=1"}, {"original": "RUN true"}
        ]}]});
        let key = super::super::step_key::scratch("linux/amd64");
        let steps = vec![
            StepPlan::keyed(1, "base", key.clone(), true, None),
            StepPlan::metadata(2),
            StepPlan::pending(3, "layer", "why".into(), None),
        ];
        annotate(&mut plan, &|i| (i == 3).then(|| steps.clone())).unwrap();
        let s = &plan["stages"][0];
        assert_eq!(s["from_step"]["cache_key"], json!(key.digest));
        assert_eq!(s["from_step"]["key_inputs"]["kind"], "scratch");
        let ins = &s["instructions"];
        assert_eq!(ins[0]["original"], "ENV A=1");
        assert_eq!(ins[0]["kind"], "metadata");
        assert_eq!(ins[0]["cache_key"], Value::Null);
        assert!(ins[0].get("pending").is_none());
        assert_eq!(ins[1]["pending"], "why");
        assert_eq!(ins[1]["cached"], Value::Null);
        // A stage the planner did not run is an error, not a plan without keys.
        assert!(annotate(&mut plan, &|_| None).is_err());
    }
}
