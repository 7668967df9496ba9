"""Answer checking for verifiable rewards, a leaf: final answers out of model text (``answers``) and reward
functions with TRL's signature, scored with timeouts (``rewards``). RL problems (data/problems.py) carry
these rewards; the RL recipe scores its rollouts with them."""
