# A job that ends without a number (dlcourse's own example, beside Hydra's): the official sweeper
# marks its trial failed and goes on. python text_result.py --multirun
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def text_result(cfg: DictConfig) -> str:
    return f"x was {cfg.x}"


if __name__ == "__main__":
    text_result()
