"""Test helper: play one episode and keep its transcript (the library's ``play_episode`` keeps only totals)."""


def play(env, policy, seed=None, options=None):
    """(transcript, return, last info); the transcript is the first observation then (action, obs, reward)."""
    obs, info = env.reset(seed=seed, options=options)
    transcript, total = [obs], 0.0
    while True:
        action = policy(env, info)
        obs, r, term, trunc, info = env.step(action)
        transcript.append((action, obs, r))
        total += r
        if term or trunc:
            return transcript, total, info
