"""Base-model mode in TRL's preference trainers: a response ends at ``END``, as SFT trained it."""

from __future__ import annotations


class NoEOSInBaseMode:
    """Base-model mode: a response ends at ``END``, with no special token after it, as SFT trained
    it (``Instruction: X\\nResponse: Y\\nEND``). TRL's DPO and KTO trainers append EOS to every
    plain-text response; here it comes off again after tokenization. Left on, the first thing such
    a trainer teaches is a token the SFT model never wrote: on the base-model route DPO raised
    P(EOS) right after ``END`` and, in the 0.87M-parameter model, after the ``E`` that starts it,
    so greedy answers ended ``\\nE`` (format compliance 94.3% where SFT had 100%).

    ``response_columns`` are the tokenized response columns of the trainer's prepared dataset.
    """

    response_columns: tuple[str, ...] = ("chosen_ids", "rejected_ids")

    def __init__(self, *args, base_model_mode: bool = False, **kwargs):
        self.base_model_mode = base_model_mode  # read by _prepare_dataset, which the TRL trainer's __init__ calls
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.base_model_mode:
            return dataset
        eos = processing_class.eos_token_id

        def drop_eos(example: dict) -> dict:
            return {key: example[key][:-1] if example[key] and example[key][-1] == eos else example[key]
                    for key in self.response_columns}

        return dataset.map(drop_eos)
