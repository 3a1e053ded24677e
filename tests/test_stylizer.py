

def test_stage_times_wait_for_the_device_before_reading():
    """fps.py on a GPU sets StageTimes.sync: every reading first runs it (here a recorder)."""
    from realtime.stylizer import StageTimes
    calls = []
    st = StageTimes(sync=lambda: calls.append(1))
    t = st.add("a", 0.0)
    st.add("b", t)
    assert len(calls) == 2 and set(st.ms) == {"a", "b"}
    assert StageTimes().add("c", 0.0) > 0
