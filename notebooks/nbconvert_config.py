# nbconvert settings for executing these notebooks with the Deno kernel:
#
#   jupyter nbconvert --config notebooks/nbconvert_config.py --to notebook --execute NB.ipynb
#
# Why: the Deno kernel (deno jupyter, 2.x) sometimes publishes a cell's "idle" status before
# that cell's last outputs (stdout, display_data, execute_result). nbclient stops reading a
# cell's outputs at "idle", so those outputs would be lost from the executed notebook (JupyterLab
# and VS Code are not affected: they route late messages by their parent). This config keeps
# reading a cell's outputs for a short grace period after "idle" (VITSSL_NB_GRACE seconds,
# default 0.2; the late messages arrive within a few milliseconds).
#
# It changes nothing else: cell errors still stop the run (nbclient checks the execute reply).
# (lib/viz/display.ts also waits, after each display, for the kernel to publish it, so that
# outputs are complete without this config too; the grace period stays as a second guard.)
#
# It also records the budget of an execution in the notebook's metadata
# (metadata.vitssl.budget = $VITSSL_BUDGET; removed when the outputs are cleared), which
# `deno task notebooks` reads to refuse replacing outputs made at another budget.

import os
import queue

import nbclient.client
from nbclient.exceptions import CellExecutionComplete
from nbconvert.preprocessors import Preprocessor

_GRACE = float(os.environ.get("VITSSL_NB_GRACE", "0.2"))


async def _poll_output_msg_with_grace(self, parent_msg_id, cell, cell_index):
    while True:
        msg = await nbclient.client.ensure_async(self.kc.iopub_channel.get_msg(timeout=None))
        if msg["parent_header"].get("msg_id") != parent_msg_id:
            continue
        try:
            self.process_message(msg, cell, cell_index)
        except CellExecutionComplete:
            break
    # Drain outputs of this cell that arrive just after "idle".
    while True:
        try:
            msg = await nbclient.client.ensure_async(self.kc.iopub_channel.get_msg(timeout=_GRACE))
        except (queue.Empty, TimeoutError):
            return
        if msg["parent_header"].get("msg_id") != parent_msg_id:
            continue
        try:
            self.process_message(msg, cell, cell_index)
        except CellExecutionComplete:
            pass


nbclient.client.NotebookClient._async_poll_output_msg = _poll_output_msg_with_grace


class BudgetMetadata(Preprocessor):
    """Records $VITSSL_BUDGET as metadata.vitssl.budget; drops it from a notebook without outputs."""

    def preprocess(self, nb, resources):
        outputs = any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
        budget = os.environ.get("VITSSL_BUDGET")
        if outputs and budget:
            nb.metadata.setdefault("vitssl", {})["budget"] = budget
        elif not outputs:
            nb.metadata.pop("vitssl", None)
        return nb, resources


c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
# Long cells (a cpu-budget pretraining run) must not time out; -1 = no limit.
c.ExecutePreprocessor.timeout = int(os.environ.get("VITSSL_NB_TIMEOUT", "-1"))
c.ExecutePreprocessor.kernel_name = "deno"
# No per-cell timestamps in the executed notebooks (they only churn diffs).
c.ExecutePreprocessor.record_timing = False
# After the execution (or the clearing) of the default preprocessors.
c.NotebookExporter.preprocessors = [BudgetMetadata]
