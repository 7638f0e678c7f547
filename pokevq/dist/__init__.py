"""Training in several processes and on several machines with torch.distributed (DDP, torchrun's names)."""
