//! Nested-loop joins that stop when their statement does.
//!
//! A statement canceled or out of time is stopped by dropping its stream: each task computing it is dropped at
//! its next `await`. DataFusion's nested-loop join (the join of a condition that is not an equality) joins a whole
//! probe batch (8,192 rows) with every row of its build side within one poll: with 300,000 rows on each side,
//! a statement that timed out went on computing for minutes. [`SlicedProbes`] gives the join its probe side in
//! slices of [`SLICE`] rows and lets the task yield after each one, so the join can be stopped within a slice's
//! work (`SLICE` × the build side's rows), and other tasks of the query runtime get their turn.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// Rows of a probe slice: the join's intermediate result stays `batch_size` rows (it takes `batch_size / SLICE`
/// build rows at a time), so its work is vectorized as before.
pub const SLICE: usize = 128;

/// The physical optimizer rule that slices the probe side of every nested-loop join.
#[derive(Debug)]
pub struct SlicedProbes;

impl PhysicalOptimizerRule for SlicedProbes {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if join.right().downcast_ref::<Sliced>().is_some() {
                return Ok(Transformed::no(node));
            }
            let children = vec![join.left().clone(), Arc::new(Sliced::new(join.right().clone())) as _];
            let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
            node.clone().replace_children(children, options).map(Transformed::yes)
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "lakehouse_sliced_probes"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Its input's batches in slices of [`SLICE`] rows, yielding to the runtime after each.
#[derive(Debug, Clone)]
struct Sliced {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl Sliced {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = input.properties().clone();
        Self { input, properties }
    }
}

impl DisplayAs for Sliced {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlicedExec: rows={SLICE}")
    }
}

impl ExecutionPlan for Sliced {
    fn name(&self) -> &str {
        "SlicedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "SlicedExec has one child, {} given",
                children.len()
            )));
        }
        Ok(Arc::new(Sliced::new(children.swap_remove(0))))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let slices = Slices { input, batch: None, offset: 0, yielded: true };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, slices)))
    }
}

struct Slices {
    input: SendableRecordBatchStream,
    /// The batch being sliced, and where its next slice starts.
    batch: Option<RecordBatch>,
    offset: usize,
    /// The task has yielded since the last slice.
    yielded: bool,
}

impl Stream for Slices {
    type Item = Result<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if let Some(batch) = &this.batch {
                let rows = SLICE.min(batch.num_rows() - this.offset);
                let slice = batch.slice(this.offset, rows);
                this.offset += rows;
                if this.offset >= batch.num_rows() {
                    this.batch = None;
                }
                this.yielded = false;
                return Poll::Ready(Some(Ok(slice)));
            }
            match ready!(this.input.poll_next_unpin(cx)) {
                Some(Ok(batch)) if batch.num_rows() > 0 => {
                    this.batch = Some(batch);
                    this.offset = 0;
                }
                Some(Ok(_)) => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// The rule slices the probe side of a nested-loop join, and the join's result is unchanged, for every kind
    /// of join (the rows of either side that match nothing are tracked per probe batch and over the build side).
    #[tokio::test]
    async fn a_nested_loop_join_reads_its_probe_side_in_slices_with_the_same_result() {
        let plain = SessionContext::new();
        let state = SessionStateBuilder::new_from_existing(plain.state())
            .with_physical_optimizer_rule(Arc::new(SlicedProbes))
            .build();
        let sliced = SessionContext::new_with_state(state);
        for join in ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"] {
            let sql = format!(
                "SELECT count(*) AS n, count(a.x) AS a, count(b.y) AS b, sum(a.x * b.y) AS s \
                 FROM generate_series(1, 1000) a(x) {join} generate_series(1, 2000) b(y) \
                 ON a.x < b.y AND (a.x + b.y) % 7 = 3 AND b.y < 1500 AND a.x > 100"
            );
            let mut results = Vec::new();
            for ctx in [&plain, &sliced] {
                let df = crate::session::sql(ctx, &sql).await.unwrap();
                let plan = df.clone().create_physical_plan().await.unwrap();
                let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string();
                assert!(shown.contains("NestedLoopJoinExec"), "{shown}");
                results.push((
                    shown.contains("SlicedExec"),
                    arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap()).unwrap().to_string(),
                ));
            }
            assert!(!results[0].0 && results[1].0, "{join}: {results:?}");
            assert_eq!(results[0].1, results[1].1, "{join}");
        }
    }
}
