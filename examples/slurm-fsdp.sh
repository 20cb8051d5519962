#!/bin/bash
# Sharded LoRA training on 2 machines with SLURM: one torchrun per node, meeting at a c10d
# rendezvous on the first node. Submit with `sbatch examples/slurm-fsdp.sh`; edit the train flags.
#SBATCH --job-name=lorakit-fsdp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --time=04:00:00

set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-4}

srun torchrun \
    --nnodes "$SLURM_NNODES" --nproc_per_node "${SLURM_GPUS_PER_NODE:-1}" \
    --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" --rdzv-id "$SLURM_JOB_ID" \
    -m lorakit.cli.main train --fsdp \
    --task causal-lm --model path/to/model --data path/to/data.jsonl \
    --output-dir "runs/fsdp-$SLURM_JOB_ID"
