"""Saving, loading and finding the model files of a training run (``<name>_<suffix>.pth``).

A dict of models ``{"trunk": ..., "embedder": ...}`` is saved as one file per entry,
``<folder>/<name>_<suffix>.pth``; the suffix is an epoch number or ``best<epoch>``.
"""

import glob
import os
import re

import torch

from ..utils import common_functions as c_f


def modelpath_creator(folder, basename, identifier, extension=".pth"):
    if identifier is None:
        return os.path.join(folder, basename + extension)
    return os.path.join(folder, f"{basename}_{identifier}{extension}")


def save_model(model, filepath):
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        torch.save(model.module.state_dict(), filepath)
    else:
        torch.save(model.state_dict(), filepath)


def load_model(model_def, model_filename, device):
    state = torch.load(model_filename, map_location=device)
    try:
        model_def.load_state_dict(state)
    except (KeyError, RuntimeError) as e:
        # A state dict taken from a DataParallel wrapper has every key prefixed with "module.".
        # nn.Module reports that mismatch as RuntimeError, so it is caught too, but only when the
        # prefix explains it; any other RuntimeError is re-raised unchanged.
        if isinstance(e, RuntimeError) and not all(k.startswith("module.") for k in state):
            raise
        model_def.load_state_dict({k[7:]: v for k, v in state.items()})


def operate_on_dict_of_models(
    input_dict,
    suffix,
    folder,
    operation,
    logging_string="",
    log_if_successful=False,
    assert_success=False,
):
    for k, v in input_dict.items():
        model_path = modelpath_creator(folder, k, suffix)
        try:
            operation(v, model_path)
            if log_if_successful:
                c_f.LOGGER.info(f"{logging_string} {model_path}")
        except OSError:
            c_f.LOGGER.warning(f"Could not {logging_string} {model_path}")
            if assert_success:
                raise


def save_dict_of_models(input_dict, suffix, folder, **kwargs):
    operate_on_dict_of_models(input_dict, suffix, folder, save_model, "SAVE", **kwargs)


def load_dict_of_models(input_dict, suffix, folder, device, **kwargs):
    def load(model, path):
        load_model(model, path, device)

    operate_on_dict_of_models(input_dict, suffix, folder, load, "LOAD", **kwargs)


def delete_dict_of_models(input_dict, suffix, folder, **kwargs):
    def delete(model, path):
        if os.path.exists(path):
            os.remove(path)

    operate_on_dict_of_models(input_dict, suffix, folder, delete, "DELETE", **kwargs)


def regex_wrapper(x):
    if isinstance(x, list):
        return [re.compile(z) for z in x]
    return re.compile(x)


def regex_replace(search, replace, contents):
    return re.sub(search, replace, contents)


def latest_version(folder, string_to_glob="trunk_*.pth", best=False):
    """``(epoch, suffix)`` of the newest saved model in ``folder``; ``(0, None)`` when none."""
    items = glob.glob(os.path.join(folder, string_to_glob))
    if not items:
        return 0, None
    pattern = r"best[0-9]+\.pth$" if best else r"[0-9]+\.pth$"
    items = [x for x in items if re.search(pattern, x)]
    if not items:
        return 0, None
    version = max(int(re.findall(r"([0-9]+)\.pth$", x)[0]) for x in items)
    suffix = f"best{version}" if best else version
    return version, suffix


