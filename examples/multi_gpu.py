"""cachekit on several processes: data parallelism (prompts split across processes) or diffusers'
context parallelism (one generation, the sequence split across processes).

    # data parallel: each process takes its share of the prompts (uneven splits are fine)
    accelerate launch --num_processes 2 examples/multi_gpu.py --mode data --model PATH
    # context parallel (Ulysses): every process runs the same generation on a shard of the tokens
    torchrun --nproc_per_node 2 examples/multi_gpu.py --mode context --model PATH

``--model`` is a local diffusers Flux or Wan folder (nothing is downloaded); ``--tiny`` builds a
random-weight tiny Flux instead, which is how this file is checked on CPU (gloo; on a CPU-only torch
``torch.accelerator.device_count`` is patched to 1, as diffusers needs a device per rank).

What cachekit does in each mode (docs/multi_gpu.md):
- data: nothing across processes. Each process applies cachekit to its own pipeline; no
  collective is ever issued, so uneven splits cannot hang.
- context: decisions that read statistics (EasyCache, BlockDrift) all-reduce one packed
  ``[sums, count]`` tensor per decision with SUM on the model's context-parallel group, so every
  rank takes the same decision, the one a single process would take. Step-indexed methods
  (fixed interval, BAC, ERTACache) issue nothing.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import cachekit


def tiny_flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=[4, 4, 8]).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_call(i: int) -> dict:
    g = torch.Generator().manual_seed(100 + i)   # "prompt" i: its embeddings
    return dict(prompt_embeds=torch.randn(1, 8, 32, generator=g), pooled_prompt_embeds=torch.randn(1, 32, generator=g),
                height=32, width=32, num_inference_steps=8, output_type="latent", max_sequence_length=8,
                generator=torch.Generator().manual_seed(i))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("data", "context"), required=True)
    ap.add_argument("--model", help="local diffusers folder (Flux or Wan)")
    ap.add_argument("--tiny", action="store_true", help="a random-weight tiny Flux instead of --model")
    ap.add_argument("--prompts", type=int, default=5, help="how many prompts (data mode)")
    args = ap.parse_args()
    if not args.tiny and not args.model:
        ap.error("give --model PATH or --tiny")
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.accelerator.device_count = lambda: 1   # diffusers: rank % device_count, 0 on a CPU-only torch
    config = cachekit.EasyCacheConfig(threshold=0.15, warmup=2)

    if args.mode == "data":
        from accelerate import PartialState

        state = PartialState(cpu=not cuda)   # on a CPU-only machine: gloo
        pipe = tiny_flux() if args.tiny else _load(args.model, state.device)
        cachekit.apply(pipe, config)                 # per process: nothing is shared, nothing reduced
        with state.split_between_processes(list(range(args.prompts))) as mine:
            for i in mine:
                with torch.no_grad():
                    pipe(**tiny_call(i)) if args.tiny else pipe(prompt=f"prompt {i}")
                s = cachekit.stats(pipe)
                print(f"[rank {state.process_index}] prompt {i}: computed fraction {s.computed_fraction:.3f}, "
                      f"collectives {s.collectives}")
        return

    from diffusers import ContextParallelConfig

    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    pipe = tiny_flux() if args.tiny else _load(args.model, torch.device("cuda", rank) if cuda else "cpu")
    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
    cachekit.apply(pipe, config)                     # before or after enable_parallelism: both work
    with torch.no_grad():
        out = pipe(**tiny_call(0)) if args.tiny else pipe(prompt="a photo of a cat")
    s = cachekit.stats(pipe)
    print(f"[rank {rank}] computed fraction {s.computed_fraction:.3f}, decisions read {s.host_reads} times, "
          f"{s.collectives} all-reduces (one per read)")
    if rank == 0 and args.tiny:
        print(f"output latents: {tuple(out.images.shape)}")
    dist.destroy_process_group()


def _load(path: str, device):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, torch_dtype=torch.bfloat16)
    return pipe.to(device)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
