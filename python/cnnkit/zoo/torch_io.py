"""PyTorch state dicts in and out (cnnkit.state_dict), under the zoo's name for them."""
from ..state_dict import StateDictError, export_torch_state_dict, load_torch_state_dict, state_dict

__all__ = ["load_torch_state_dict", "export_torch_state_dict", "state_dict", "StateDictError"]
