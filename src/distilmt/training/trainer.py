"""Training on top of transformers' Seq2SeqTrainer: one subclass that combines the loss terms.

The optimiser (AdamW), cosine schedule with warm-up, gradient accumulation and clipping, bf16 autocast,
checkpointing and resume, DDP (torchrun) and TensorBoard logging are the Trainer's; what we add is the
loss (the active terms of :mod:`distilmt.training_terms` summed and normalised once by the global target-token
count), token-budget
batches, per-term logging (CE, KD, total, tokens/s) and dev BLEU from real generation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import sacrebleu
import torch
from torch.utils.data import DataLoader
from transformers import Seq2SeqTrainer
from transformers.trainer_utils import speed_metrics

from ..config import DistillConfig
from ..data.batching import TokenBatchSampler
from ..data.prompt import TranslationPrompt
from ..errors import ConfigError
from ..models.generation import evaluating, generate_continuations
from ..models.loading import untied_missing_keys
from ..models.mutual import MutualPair
from ..teachers.signal import TeacherSignal
from .intermediate import IntermediateKD
from .schedules import schedule_value
from .terms import LossTerm, OnPolicyTerm, StepContext, build_terms, shift_for_loss, signal_logits, summed

log = logging.getLogger(__name__)


def dev_scores(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Dev BLEU, chrF (sacrebleu, corpus level) and the share of distinct hypotheses: what every evaluation during
    training logs (as ``eval_bleu``, ``eval_chrf``, ``eval_distinct``), for seq2seq and causal students alike."""
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "distinct": len(set(hyps)) / max(len(hyps), 1)}


class DistilTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose loss is ``alpha * T^2 * D + beta * CE_ls`` (plain CE when there is no teacher), with
    D the divergence ``distill.divergence`` (forward KL by default; a teacher cache gives it on its top k),
    plus ``hidden_weight * hidden + attention_weight * attention`` when those terms are on.

    Each term is an object (:mod:`distilmt.training_terms`); ``self.terms`` are the active ones, chosen in
    ``__init__`` from the DistillConfig and the teacher's declared capabilities (:class:`TeacherSignal`).

    Every term is a sum over positions divided once by the global target-token count (over accumulation
    micro-batches and processes): the hidden-state and attention sums too, encoder positions included, so
    they are "per target token" and micro-batch x accumulation equals the full batch for them as well.
    T, alpha and beta follow ``distill.*_schedule`` (progress = global_step / max_steps).

    The hidden-state adapters (:class:`distilmt.intermediate.IntermediateKD`) are attached to the student as
    the submodule ``distil_adapters`` for the duration of :meth:`train` only: the Trainer's optimizer, DDP,
    checkpoints and best-model reload then include them, and the student saved after training does not. Learned
    ensemble weights (:class:`distilmt.teachers.ensemble.EnsembleTeacher`) are attached the same way as ``distil_ensemble``;
    their term ``ensemble_nll`` (the mixture's NLL of the references) moves only them.

    On-policy distillation (``distill.on_policy_ratio`` = lambda): for a fraction lambda of training batches the
    student first translates the batch's sources itself (no gradient, eval mode), and the KD term is
    ``T^2 * divergence(student, teacher)`` (``distill.on_policy_divergence``) on those translations, teacher-forced
    through both models in one pass each; CE stays on the reference. That sum runs over the generated tokens
    (labels -100 after the first eos) and is divided, like every other term, by the global count of *reference*
    target tokens, so micro-batch x accumulation still equals the full batch.

    Mutual learning: when the model is a :class:`distilmt.mutual.MutualPair`, each student gets its own terms plus
    ``mutual_weight * T^2 * KL(p_peer^T || p_self^T)`` (peer detached), and the loss is the sum of both.

    Each micro-batch: the student's forward (hidden states / attentions only when a term needs them), the teacher's
    signal once (:meth:`step_context`), ``sum(term.weight(now) * term(step))`` (:func:`distilmt.training_terms.summed`),
    divided once by the token count; each term's value is logged under its name.

    A causal-LM student (``prompt``, a :class:`~distilmt.data.prompt.TranslationPrompt`; the eval dataset is then a
    list of (source, reference) pairs) is evaluated by :meth:`evaluate` through the project's causal generation
    path, :func:`~distilmt.models.generation.generate_continuations`: the same metrics, log line, best checkpoint
    and early stopping as a seq2seq student's dev BLEU.
    """

    # compute_loss returns sum / (global token count over accumulation steps): already scaled for GA.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, teacher: TeacherSignal | None = None, distill: DistillConfig | None = None,
                 label_smoothing: float = 0.0, batch_tokens: int = 0, prompt: TranslationPrompt | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.prompt = prompt
        # We take num_items_in_batch (the global count of target tokens) whatever the model's signature says.
        self.model_accepts_loss_kwargs = True
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        self.distill = distill or DistillConfig(alpha=0.0, beta=1.0, temperature=1.0)
        self.label_smoothing = label_smoothing
        self.batch_tokens = batch_tokens
        self._sums = {"ce": 0.0, "kd": 0.0, "tokens": 0, "micro": 0}
        self._last_log_time = time.time()
        self._scheduled: dict[str, float] = {}  # T, alpha, beta of the latest training micro-batch, for the log
        self.intermediate = self._intermediate_terms()
        pair = isinstance(self.accelerator.unwrap_model(self.model), MutualPair)
        if self.distill.mutual and not pair:
            raise ConfigError("distill.mutual: the trainer's model must be a distilmt.mutual.MutualPair of two "
                              "students (train_seq2seq builds one for you)")
        d = self.distill
        if self.teacher is not None and self.teacher.has_topk and d.uses_kd and (
                d.divergence == "reverse_kl" or (d.divergence == "jsd" and d.divergence_beta == 1)):
            raise ConfigError(f"distill.divergence: {d.divergence} (the reverse KL) is infinite on a teacher cache's "
                              "truncated top-k distribution: choose forward_kl, jsd (divergence_beta < 1), skew_kl "
                              "or tvd, or use a live teacher")
        self.terms: list[LossTerm] = build_terms(d, self.teacher, label_smoothing, self.intermediate,
                                                 translate=self.student_translations, seed=self.args.seed, mutual=pair)

    ADAPTERS = "distil_adapters"
    ENSEMBLE = "distil_ensemble"
    EXTRA_TERMS = ("hidden", "attention", "ensemble_nll", "mutual", "ce_b", "kd_b", "mutual_b")

    def _attachments(self) -> dict:
        """Trainable modules that are not the student: attached to it during train() only."""
        found = {}
        if self.intermediate is not None and len(self.intermediate.adapters) > 0:
            found[self.ADAPTERS] = self.intermediate.adapters
        if self.teacher is not None and self.teacher.learned:
            found[self.ENSEMBLE] = self.teacher.weights
        return found

    def _intermediate_terms(self):
        """The hidden-state/attention terms and their adapters, or None when both weights are 0."""
        d = self.distill
        if d.hidden_weight == 0 and d.attention_weight == 0:
            return None
        if self.teacher is None or not self.teacher.has_outputs:
            raise ConfigError("distill.hidden_weight/attention_weight: hidden-state and attention KD need a live "
                              "teacher model (one, not a teacher cache, an ensemble or none); set "
                              "distill.teacher_cache to false, distill.teachers to [] or both weights to 0")
        terms = IntermediateKD(d, self.model.config, self.teacher.model.config).to(self.args.device)
        if terms.needs_attentions and self.model.config._attn_implementation != "eager":
            # SDPA and flash attention return no weights; eager does (same maths). Restored after train().
            self._attn_to_restore = self.model.config._attn_implementation
            self.model.set_attn_implementation("eager")
        return terms

    def train(self, *args, **kwargs):
        attach = self._attachments()
        for name, module in attach.items():
            self.model.add_module(name, module)
        try:
            return super().train(*args, **kwargs)
        finally:
            for name in attach:
                if hasattr(self.model, name):
                    delattr(self.model, name)
            restore = getattr(self, "_attn_to_restore", None)
            if restore:
                self.model.set_attn_implementation(restore)
                self._attn_to_restore = None

    # -- dev BLEU of a causal-LM student -------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **gen_kwargs):
        """Seq2SeqTrainer's evaluation (generation, :func:`~distilmt.training.callbacks.bleu_metric`) for a seq2seq
        student. For a causal one the dev sources are translated with
        :func:`~distilmt.models.generation.generate_continuations` (``generation_num_beams`` beams, at most
        ``generation_max_length`` new tokens, in eval mode) and scored by :func:`dev_scores`; the metrics are
        logged and handed to the callbacks' ``on_evaluate`` as the Trainer's own evaluation does, and returned,
        so the best checkpoint (``metric_for_best_model``) and early stopping follow them."""
        if self.prompt is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)
        pairs = list(self.eval_dataset if eval_dataset is None else eval_dataset)
        start = time.time()
        model = self.accelerator.unwrap_model(self.model)
        with evaluating(model):
            found = generate_continuations(
                model, self.prompt, [source for source, _ in pairs],
                batch_tokens=self.args.per_device_eval_batch_size * 64,
                max_new_tokens=gen_kwargs.get("max_new_tokens") or self.args.generation_max_length or 128,
                num_beams=gen_kwargs.get("num_beams") or self.args.generation_num_beams or 1, do_sample=False)
        scores = dev_scores([hyps[0][0] for hyps in found], [reference.strip() for _, reference in pairs])
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in scores.items()}
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=len(pairs)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # -- data ---------------------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        if not self.batch_tokens:
            return super().get_train_dataloader()
        sampler = TokenBatchSampler(self.train_dataset.lengths(), self.batch_tokens, seed=self.args.seed)
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

    # -- loss ---------------------------------------------------------------------------------------------
    @property
    def _last_policy(self) -> dict[str, torch.Tensor] | None:
        """The latest on-policy batch (the student's own translations), kept by the on-policy term."""
        return next((t.last_policy for t in self.terms if isinstance(t, OnPolicyTerm)), None)

    @torch.no_grad()
    def student_translations(self, model, inputs) -> dict[str, torch.Tensor]:
        """The student's own translations of the batch's sources as a teacher-forcing batch: ``input_ids``,
        ``attention_mask``, ``decoder_input_ids`` (start token + generated tokens) and ``labels`` (the generated
        tokens up to and including the first eos, -100 after it). Sampled at ``on_policy_temperature`` or greedy,
        in eval mode (no dropout); the model's training mode is restored afterwards."""
        d = self.distill
        student = self.accelerator.unwrap_model(model)
        was_training = student.training
        student.eval()
        try:
            options = {"do_sample": True, "temperature": d.on_policy_temperature, "top_k": 0, "top_p": 1.0} \
                if d.on_policy_decoding == "sample" else {"do_sample": False}
            sequences = student.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                         num_beams=1, max_new_tokens=d.on_policy_max_new_tokens, **options)
        finally:
            student.train(was_training)
        decoder_input_ids, labels = generated_targets(sequences, student.generation_config.eos_token_id)
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                "decoder_input_ids": decoder_input_ids, "labels": labels}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student = self.accelerator.unwrap_model(model)
        if isinstance(student, MutualPair):
            return self._mutual_loss(model, inputs, return_outputs, num_items_in_batch)
        if not getattr(student.config, "is_encoder_decoder", True):
            return self._causal_loss(model, inputs, return_outputs, num_items_in_batch)
        step = self.step_context(model, inputs)
        step.values["total"] = summed(self.terms, step)
        return self._finish(step.values, step.now, model, step.outputs, return_outputs, num_items_in_batch)

    def _live(self, terms, training: bool) -> list[LossTerm]:
        return [t for t in terms if training or not t.training_only]

    def step_context(self, model, inputs) -> StepContext:
        """One micro-batch's :class:`StepContext`: the student's forward on the reference batch (asked for hidden
        states / attentions only when a live term needs them) and the teacher's signal, computed once."""
        live = self._live(self.terms, model.training)
        hidden, attentions = any(t.needs_hidden for t in live), any(t.needs_attentions for t in live)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        decoder_input_ids=inputs["decoder_input_ids"], use_cache=False,
                        **({"output_hidden_states": True} if hidden else {}),
                        **({"output_attentions": True} if attentions else {}))
        step = StepContext(inputs=inputs, outputs=outputs, now=self.scheduled_values(), training=model.training,
                           model=model)
        self._teacher_signal(step, live)
        return step

    def _teacher_signal(self, step: StepContext, live: list[LossTerm]) -> None:
        """Fill in the step's teacher signal, once: the full outputs when a term needs them (their logits then
        serve the KD), else the top k (a cache, forward KL) or the logits; none on a step where a term takes the
        KD over from the reference (on-policy), without KD, without a teacher or outside training."""
        if self.teacher is None or not step.training:
            return
        d = self.distill
        if any(t.needs_teacher_outputs for t in live):  # one teacher pass gives the logits, hidden states, attentions
            step.teacher_outputs = self.teacher.outputs(step.inputs, hidden=any(t.needs_hidden for t in live),
                                                        attentions=any(t.needs_attentions for t in live))
            step.teacher_logits = step.teacher_outputs.logits if d.uses_kd else None
        draws = [t.replaces_reference_kd() for t in live]  # each such term draws once per step
        step.on_policy = any(draws)
        if step.on_policy:  # KD on the student's own translations; the reference only feeds the CE term
            step.teacher_logits = step.teacher_topk = None
        elif step.teacher_outputs is None and d.uses_kd:
            if self.teacher.has_topk and d.divergence == "forward_kl":  # a cache: KL on its k entries only
                step.teacher_topk = self.teacher.topk(step.inputs)
            elif self.teacher.has_topk:  # any other divergence: the dense -inf logits
                step.teacher_logits = self.teacher.logits(step.inputs)
            else:
                step.teacher_logits = signal_logits(self.teacher, step.inputs, step.temperature)

    def _finish(self, values, now, model, outputs, return_outputs, num_items_in_batch):
        loss = self._normalised(values, num_items_in_batch, values["n_tokens"].device)
        if model.training:
            self._record(values, now)
        return (loss, outputs) if return_outputs else loss

    def _causal_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """A causal-LM student (:mod:`distilmt.data.prompt`): one prompt + target sequence, labels -100 on the prompt.
        The token term on the target positions (logits at t predict token t + 1, so both models' logits drop the
        last position and the labels the first), the KD term on the shared real vocabulary."""
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        step = StepContext(inputs=inputs, outputs=outputs, now=self.scheduled_values(), training=model.training,
                           model=model)
        token = self.terms[:1]  # the token term only (train_causal refuses the others)
        self._teacher_signal(step, token)
        step.logits, step.teacher_logits, step.labels = shift_for_loss(step.logits, step.teacher_logits, step.labels)
        step.teacher_topk = None
        step.values["total"] = summed(token, step)
        return self._finish(step.values, step.now, model, outputs, return_outputs, num_items_in_batch)

    def _normalised(self, terms, num_items_in_batch, device) -> torch.Tensor:
        if num_items_in_batch is None:
            return terms["total"] / terms["n_tokens"].clamp(min=1)
        loss = terms["total"] / torch.as_tensor(num_items_in_batch, device=device).clamp(min=1)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            # DDP averages gradients over processes; the count is global, so undo that mean.
            loss = loss * self.args.world_size
        return loss

    def _record(self, terms, now) -> None:
        n = max(int(terms["n_tokens"]), 1)
        self._sums["ce"] += float(terms["ce"].detach()) / n
        self._sums["kd"] += float(terms["kd"].detach()) / n
        for key in self.EXTRA_TERMS:
            if key in terms:
                self._sums[key] = self._sums.get(key, 0.0) + float(terms[key].detach()) / n
        self._sums["tokens"] += int(terms["n_tokens"])
        self._sums["micro"] += 1
        self._scheduled = now

    def _mutual_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """Both students of a MutualPair: each one's terms (CE (+ KD) + ``mutual_weight * T^2 * KL(peer || self)``),
        one teacher signal for both; the loss is the sum, logged as ce/kd/mutual and ce_b/kd_b/mutual_b."""
        out_a, out_b = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                             decoder_input_ids=inputs["decoder_input_ids"], use_cache=False, peer=True)
        shared = StepContext(inputs=inputs, outputs=out_a, now=self.scheduled_values(), training=model.training,
                             model=model)
        self._teacher_signal(shared, self._live(self.terms, model.training))
        a, b = (dataclasses.replace(shared, outputs=mine, logits=mine.logits, peer_logits=peer.logits, values={})
                for mine, peer in ((out_a, out_b), (out_b, out_a)))
        total = summed(self.terms, a) + summed(self.terms, b)
        values = {**a.values, "ce_b": b.values["ce"], "kd_b": b.values["kd"], "mutual_b": b.values["mutual"],
                  "total": total}
        return self._finish(values, shared.now, model, out_a, return_outputs, num_items_in_batch)

    # -- a MutualPair is saved and loaded as two plain student directories -----------------------------------
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        pair = self.accelerator.unwrap_model(self.model)
        if not isinstance(pair, MutualPair):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        attached = {name: pair._modules.pop(name) for name in list(pair._modules) if name.startswith("distil_")}
        try:
            pair.save_pretrained(output_dir, self.processing_class)
        finally:
            pair._modules.update(attached)
        if attached:  # adapters / ensemble weights of a checkpoint, for resume
            torch.save({k: m.state_dict() for k, m in attached.items()}, os.path.join(output_dir, "distil_extra.pt"))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_mutual(self, directory) -> None:
        pair = self.accelerator.unwrap_model(self.model)
        pair.load_students(directory)
        extra = os.path.join(directory, "distil_extra.pt")
        if os.path.isfile(extra):
            for name, state in torch.load(extra, weights_only=True).items():
                if name in pair._modules:
                    pair._modules[name].load_state_dict(state)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if isinstance(self.accelerator.unwrap_model(model or self.model), MutualPair):
            return self._load_mutual(resume_from_checkpoint)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if isinstance(self.accelerator.unwrap_model(self.model), MutualPair):
            return self._load_mutual(self.state.best_model_checkpoint)
        return super()._load_best_model()

    def _issue_warnings_after_load(self, load_result) -> None:
        missing = untied_missing_keys(self.accelerator.unwrap_model(self.model), load_result.missing_keys)
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def scheduled_values(self) -> dict[str, float]:
        """T, alpha and beta at this point of training (distill.*_schedule; constant by default).

        Progress is ``global_step / max_steps``: the same for every micro-batch of one accumulated step.
        """
        d = self.distill
        max_steps = getattr(self.state, "max_steps", 0) or 0
        progress = self.state.global_step / max_steps if max_steps > 0 else 0.0
        return {
            "temperature": schedule_value(d.temperature_schedule, d.temperature,
                                          d.temperature_final if d.temperature_final is not None else d.temperature,
                                          progress),
            "alpha": schedule_value(d.weight_schedule, d.alpha, d.final_alpha, progress),
            "beta": schedule_value(d.weight_schedule, d.beta, d.final_beta, progress),
        }

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        # example_index is for the teacher signal only: generate() must not see it.
        inputs = {k: v for k, v in inputs.items() if k != "example_index"}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    def _is_scheduled(self) -> bool:
        return bool(self._scheduled) and (self.distill.temperature_schedule != "constant"
                                          or self.distill.weight_schedule != "constant")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._sums["micro"]:
            now = time.time()
            micro = self._sums["micro"]
            logs["ce"] = round(self._sums["ce"] / micro, 4)
            if self.teacher is not None and self.distill.uses_kd:
                logs["kd"] = round(self._sums["kd"] / micro, 4)
            for key in self.EXTRA_TERMS:  # per target token, like ce and kd
                if key in self._sums:
                    logs[key] = round(self._sums[key] / micro, 4)
            if self._is_scheduled():  # the values used in the latest step, next to the loss they produced
                logs.update({k: round(v, 6) for k, v in self._scheduled.items()})
            logs["target_tokens_per_s"] = round(self._sums["tokens"] * self.args.world_size
                                                / max(now - self._last_log_time, 1e-6), 1)
            self._sums = {"ce": 0.0, "kd": 0.0, "tokens": 0, "micro": 0}
            self._last_log_time = now
        super().log(logs, start_time)


def generated_targets(sequences: torch.Tensor, eos_token_id: int, ignore_index: int = -100):
    """``(decoder_input_ids, labels)`` for teacher-forcing generated ``sequences`` (which begin with the decoder
    start token): inputs are all but the last token, labels all but the first, with every label after the first
    eos set to ``ignore_index`` (the eos itself is kept: the student learns to stop). A row without eos keeps all."""
    decoder_input_ids = sequences[:, :-1]
    labels = sequences[:, 1:].clone()
    is_eos = labels.eq(eos_token_id)
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return decoder_input_ids, labels.masked_fill(after_eos, ignore_index)


